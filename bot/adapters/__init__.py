"""Platform adapters: each turns its platform's events into ``InboundMessage`` and posts replies."""
