"""The platform-neutral intake: the one door every chat platform goes through."""

from bot.intake.intake import Intake

__all__ = ["Intake"]
