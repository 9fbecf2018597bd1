"""Plans: the reference's table as defaults, and how an account's limits are found."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from .._models import Limits

DEFAULT_PLANS: Mapping[str, Limits | None] = MappingProxyType(
    {
        "free": Limits(60, 100_000, 10_000),
        "starter": Limits(600, 1_000_000, 100_000),
        "pro": Limits(6_000, 10_000_000, 1_000_000),
        "enterprise": None,  # per-account custom limits
    }
)
DEFAULT_PLAN = "free"


class Plans:
    """Plan name → limits (None: the plan's limits are set per account)."""

    __slots__ = ("_default_limits", "_table", "default")

    def __init__(self, table: Mapping[str, Limits | None] = DEFAULT_PLANS, default: str = DEFAULT_PLAN) -> None:
        default_limits = table.get(default)
        if default_limits is None:
            raise ValueError(f"default plan {default!r} must be a plan with limits of its own")
        self._table = dict(table)
        self._default_limits = default_limits
        self.default = default

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def get(self, name: str) -> Limits | None:
        return self._table.get(name)

    def names(self) -> list[str]:
        return list(self._table)

    def needs_custom(self, name: str) -> bool:
        return name in self._table and self._table[name] is None

    def resolve(self, plan: str, custom: Limits | None = None) -> Limits:
        """An account's limits: its own, else its plan's, else the default plan's."""
        if custom is not None:
            return custom
        limits = self._table.get(plan)
        return self._default_limits if limits is None else limits

    def __repr__(self) -> str:
        return f"Plans({self._table!r}, default={self.default!r})"
