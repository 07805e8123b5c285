"""Settings of ``sluice deadletters``: flags and ``SLUICE_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import BrokerSettings, check_kinds, option

__all__ = ["DeadLetterSettings"]


@dataclass(frozen=True)
class DeadLetterSettings(BrokerSettings):
    kinds: tuple[str, ...] = option(
        ("measurement",), "record kinds whose dead-letter queues to read, comma-separated"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kinds(self.kinds)
