"""The research pipeline: one turn, from the question to a cited answer, and its steps.

``orchestrator`` is the script of a turn; ``memory`` what is remembered around it; the
other modules are its steps (keywords, ranking, citations, prompts, safety, wording).
"""
