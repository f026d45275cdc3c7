"""One frozen, typed parameter object per workflow kind (docs/design.md §6, §12).

Built and validated once — by :meth:`build`, which the CLI (``cli/workflow_cmd.py``), the admin
route (``api/admin.py``) and the scheduler all call — then stored as the run's JSON parameters
(:meth:`to_json`, the same keys steps read) and read back by steps as ``ctx.parameters``
(:func:`parameters_of`). Each object knows its lock scope (:attr:`lock_table`): a run locks
``ds:table`` when it is about one table, else ``ds:*``.

A new workflow kind is a module with its parameter class (registered with
:func:`parameters`) and its steps (registered with ``engine.workflow``), plus one line in
``workflows/registry.py`` importing it; see ``docs/workflows.md``. The sync kinds share
:class:`SyncParams` here; bulk upload's :class:`~matengine.workflows.bulk_upload.UploadParams`
lives in its module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast

from matengine.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from matengine.config import Settings
    from matengine.workflows.runs import Run


@dataclass(frozen=True)
class WorkflowParams:
    """What every run has: its kind and the datastack it works on."""

    KIND: ClassVar[str] = ""
    datastack: str

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def lock_table(self) -> str | None:
        """The table this run locks alone, or None for the whole datastack."""
        return None

    def to_json(self) -> dict[str, Any]:
        """The run's stored parameters (JSON values; timestamps as ISO strings)."""
        out = {}
        for k, v in asdict(self).items():
            out[k] = v.isoformat() if isinstance(v, datetime) else list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_json(cls: type[P], data: dict[str, Any]) -> P:
        """Back from stored parameters (already validated when the run was submitted)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


P = TypeVar("P", bound=WorkflowParams)
PARAMETERS: dict[str, type[WorkflowParams]] = {}


def parameters(*kinds: str) -> Callable[[type[P]], type[P]]:
    """Register the parameter class of one or more workflow kinds."""

    def register(cls: type[P]) -> type[P]:
        for kind in kinds:
            PARAMETERS[kind] = cls
        return cls

    return register


def parameters_of(run: Run) -> WorkflowParams:
    try:
        cls = PARAMETERS[run.kind]
    except KeyError:
        raise NotFound(f"unknown workflow kind {run.kind!r}") from None
    return cls.from_json({**run.parameters, "datastack": run.datastack, "kind": run.kind})


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InvalidInput(f"{name} must be {what}, not {value!r}", field=name)
    return value


SYNC_KINDS = ("ingest", "update_roots", "materialize", "complete", "sync_live")

RootsPlanChoice = Literal["auto", "in_place", "rewrite"]
ROOTS_PLANS: tuple[RootsPlanChoice, ...] = ("auto", "in_place", "rewrite")


def _roots_plan(value: Any) -> RootsPlanChoice:
    if value not in ROOTS_PLANS:
        raise InvalidInput(f"roots_plan must be auto, in_place or rewrite, not {value!r}", field="roots_plan")
    return cast(RootsPlanChoice, value)


@parameters(*SYNC_KINDS)
@dataclass(frozen=True)
class SyncParams(WorkflowParams):
    """ingest / update-roots / materialize / complete / sync_live of some tables of a
    datastack at T."""

    tables: tuple[str, ...]
    timestamp: str  # ISO, UTC
    chunk_rows: int
    workflow: str = "ingest"  # which of SYNC_KINDS (the run's kind, not stored twice)
    table: str | None = None  # the one table asked for, if any
    days_to_expire: int | None = None
    scheduled: bool = False
    # expired roots per update-roots chunk (None: ``sync_steps.ROOT_SLICE``)
    roots_per_chunk: int | None = None
    # how update-roots rewrites: chosen by counts (``auto``), or forced
    roots_plan: RootsPlanChoice = "auto"

    def __post_init__(self) -> None:
        # the two tuning fields are checked however the object is made (``build`` or stored
        # JSON that a caller extended), so a step can trust them
        if self.roots_per_chunk is not None:
            _count(self.roots_per_chunk, "roots_per_chunk")
        _roots_plan(self.roots_plan)

    @property
    def kind(self) -> str:
        return self.workflow

    @property
    def lock_table(self) -> str | None:
        # materialize / complete lock the whole datastack; a one-table sync locks that table
        return self.table if self.workflow in ("ingest", "update_roots") else None

    @property
    def when(self) -> datetime:
        from matengine.timeutil import to_utc

        return to_utc(self.timestamp)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.pop("workflow")
        out.pop("datastack")  # a column of the run
        if out["days_to_expire"] is None:
            out.pop("days_to_expire")
        if not out["scheduled"]:
            out.pop("scheduled")
        if out["roots_per_chunk"] is None:
            out.pop("roots_per_chunk")
        if out["roots_plan"] == "auto":
            out.pop("roots_plan")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncParams:
        data = dict(data)
        data["workflow"] = data.pop("kind", "ingest")
        data["tables"] = tuple(data.get("tables", ()))
        if not data.get("roots_plan"):  # absent: chosen by counts
            data.pop("roots_plan", None)
        if data.get("chunk_rows") is None:  # runs recorded without it take the default
            from matengine.config import get_settings

            data["chunk_rows"] = get_settings().chunk_rows
        return super().from_json(data)

    @staticmethod
    def of(parameters: WorkflowParams) -> SyncParams:
        """``ctx.parameters`` of a sync step, as the type it is (a step of another kind's run
        is a bug, not bad input)."""
        if not isinstance(parameters, SyncParams):
            raise TypeError(f"expected the parameters of a sync run, got {type(parameters).__name__}")
        return parameters

    @classmethod
    def build(
        cls,
        engine: Engine,
        kind: str,
        datastack: str,
        *,
        table: str | None = None,
        timestamp: str | datetime | None = None,
        days_to_expire: int | None = None,
        chunk_rows: int | None = None,
        scheduled: bool = False,
        roots_per_chunk: int | None = None,
        roots_plan: str = "auto",
        settings: Settings | None = None,
    ) -> SyncParams:
        """Check the request against the catalog: the datastack and table exist, the numbers
        are positive, the time is a timestamp (default: now), ``roots_plan`` is one of
        :data:`ROOTS_PLANS`."""
        from matengine import catalog
        from matengine.config import get_settings
        from matengine.timeutil import to_utc, utcnow

        if kind not in SYNC_KINDS:
            raise NotFound(f"unknown workflow {kind!r}")
        catalog.get_datastack(engine, datastack)
        if chunk_rows is not None:
            _count(chunk_rows, "chunk_rows")
        if days_to_expire is not None:
            _count(days_to_expire, "days_to_expire", minimum=0)  # 0: never expires
        if roots_per_chunk is not None:
            _count(roots_per_chunk, "roots_per_chunk")
        plan = _roots_plan(roots_plan)
        tables: tuple[str, ...]
        if table is not None:
            tables = (catalog.get_table(engine, datastack, table).table_name,)
        else:
            tables = tuple(t.table_name for t in catalog.list_tables(engine, datastack))
        try:
            when = to_utc(timestamp) if timestamp else utcnow()
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(f"expected an ISO timestamp, got {timestamp!r}", field="timestamp") from None
        return cls(
            datastack=datastack,
            tables=tables,
            timestamp=when.isoformat(),
            chunk_rows=chunk_rows or (settings or get_settings()).chunk_rows,
            workflow=kind,
            table=table,
            days_to_expire=days_to_expire,
            scheduled=scheduled,
            roots_per_chunk=roots_per_chunk,
            roots_plan=plan,
        )
