"""The agents: each does one job of I/O or compute for a turn, knowing no chat platform.

``fetch`` (Wikipedia and Hacker News over one HTTP session), ``analysis`` (statistics in
a killable child process) and ``embeddings`` (vectors in a long-lived process pool).
"""
