"""Small general helpers the rest of the bot builds on; they know nothing of chat or research."""
