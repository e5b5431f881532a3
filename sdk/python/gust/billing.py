"""Billing: the usage ledger's reports, with Modal's names.

    import gust as modal
    from datetime import datetime

    rows = modal.billing.workspace_billing_report(start=datetime(2026, 1, 1), resolution="d", tag_names=["team"])
    for r in rows:
        print(r["object_id"], r["interval_start"], r["cost"], r["tags"])

Each row is a ``WorkspaceBillingReportItem``: ``object_id`` (an app, or ``image-builds``),
``description``, ``environment_name``, ``interval_start`` (a UTC datetime), ``cost`` (a
``Decimal``), ``tags``, and ``cost_by_resource`` (``cpu``, ``memory``, ``gpu:<TYPE>``, each a
``Decimal``). ``Workspace.from_context().billing.report(...)`` is the same report.

gust's own additions: ``rates()``, ``usage(...)`` (raw seconds and resource units by group),
``sandbox_cost(sb)`` and ``app_cost(app)`` (what a running sandbox or app has cost so far), and
``advise(...)`` (the duty-cycle advisor).
"""

import datetime as _dt
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, TypedDict

from . import exception as exc
from ._http import Client, get_client


class WorkspaceBillingReportItem(TypedDict):
    object_id: str
    description: str
    environment_name: str
    interval_start: _dt.datetime
    cost: Decimal
    tags: Dict[str, str]
    cost_by_resource: Dict[str, Decimal]


def _when(name: str, t: Any) -> Optional[str]:
    """A time for the API: datetimes in UTC (naive ones are UTC, as Modal reads them), dates at
    UTC midnight."""
    if t is None:
        return None
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        elif t.utcoffset() != _dt.timedelta(0):
            raise exc.InvalidError(f"{name} must be in UTC or timezone-naive (read as UTC), got {t.isoformat()}")
        return t.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(t, _dt.date):
        return t.isoformat()
    raise exc.InvalidError(f"{name} must be a datetime or date, got {t!r}")


def _parse_time(s: str) -> _dt.datetime:
    s = s.replace("Z", "+00:00")
    if "." in s:  # Go writes up to 9 fractional digits; Python reads 6
        head, frac = s.split(".", 1)
        digits = "".join(c for c in frac if c.isdigit())
        rest = frac[len(digits):]
        s = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    return _dt.datetime.fromisoformat(s).astimezone(_dt.timezone.utc)


def _row(r: dict) -> WorkspaceBillingReportItem:
    return WorkspaceBillingReportItem(
        object_id=r["object_id"], description=r.get("description", ""),
        environment_name=r.get("environment_name", ""), interval_start=_parse_time(r["interval_start"]),
        cost=Decimal(r["cost"]), tags=dict(r.get("tags") or {}),
        cost_by_resource={k: Decimal(v) for k, v in (r.get("cost_by_resource") or {}).items()})


def _tz(tz: Optional[str]) -> Optional[str]:
    """A time zone for the API: ``"local"`` becomes this machine's offset from UTC now."""
    if tz is None or str(tz).strip().lower() != "local":
        return tz
    import time as _time
    off = _time.localtime().tm_gmtoff
    sign = "-" if off < 0 else "+"
    off = abs(off)
    return f"{sign}{off // 3600:02d}:{off % 3600 // 60:02d}"


def workspace_billing_report(*, start: Any, end: Any = None, resolution: str = "d",
                             tag_names: Optional[Sequence[str]] = None, tz: Optional[str] = None,
                             client: Optional[Client] = None) -> List[WorkspaceBillingReportItem]:
    """Costs of the workspace by object (app) and interval, as Modal's report: ``start`` is
    rounded down to its interval; only full intervals before ``end`` (default now) are reported.
    ``resolution`` is ``"d"`` or ``"h"``; ``tag_names`` lists the tag keys to include, or
    ``["*"]`` for all. ``tz`` (gust's; Modal's report has only UTC days) makes the days and
    hours those of a zone: ``"local"``, an offset (``"-4"``, ``"+05:30"``) or an IANA name;
    ``interval_start`` stays in UTC."""
    if resolution not in ("d", "h"):
        raise exc.InvalidError(f"resolution must be 'd' or 'h', not {resolution!r}")
    if start is None:
        raise exc.InvalidError("start is required")
    q: Dict[str, Any] = {"start": _when("start", start), "end": _when("end", end), "resolution": resolution}
    if tag_names:
        q["tag_names"] = list(tag_names)
    if tz is not None:
        q["tz"] = _tz(tz)
    data = (client or get_client()).json("GET", "/v1/billing/report", query=q)
    return [_row(r) for r in data.get("rows") or []]


def rates(*, client: Optional[Client] = None) -> dict:
    """The price table: dollars per CPU core-second, per GiB-second of memory, per GPU-second of
    each type (``gpu_per_second``), and where the figures come from (``source``)."""
    return (client or get_client()).json("GET", "/v1/billing/rates")


def usage(*, since: Any = None, until: Any = None, by: str = "app", tz: Optional[str] = None,
          client: Optional[Client] = None) -> List[dict]:
    """Raw usage over [since, until) (default the last 30 days) grouped ``by`` app, function,
    sandbox, tag or day (``tz``'s days, default UTC): seconds, CPU seconds, billable core- and
    GiB-seconds, GPU seconds, stored GiB-seconds, peak memory, and ``cost`` (a Decimal)."""
    q = {"since": _when("since", since), "until": _when("until", until), "by": by}
    if tz is not None:
        q["tz"] = _tz(tz)
    rows = (client or get_client()).json("GET", "/v1/usage", query=q).get("rows") or []
    for r in rows:
        r["cost"] = Decimal(r["cost"])
    return rows


def _live(data: dict) -> dict:
    for k in ("cost", "estimated_cost"):
        data[k] = Decimal(data[k])
    data["cost_by_resource"] = {k: Decimal(v) for k, v in (data.get("cost_by_resource") or {}).items()}
    return data


def sandbox_cost(sandbox: Any, *, client: Optional[Client] = None) -> dict:
    """What a sandbox (a ``Sandbox`` or its id) has cost so far: ``cost`` over the recorded
    intervals, and ``estimated_cost`` adding the time since at the requested rate while it runs
    (the figure to stop a runaway by)."""
    sid = sandbox if isinstance(sandbox, str) else sandbox.object_id
    return _live((client or get_client()).json("GET", f"/v1/sandboxes/{sid}/usage"))


def app_cost(app: Any, *, client: Optional[Client] = None) -> dict:
    """What an app (an ``App`` or its id) has cost so far, its sandboxes and function
    containers together; as ``sandbox_cost``."""
    aid = app if isinstance(app, str) else app.app_id
    return _live((client or get_client()).json("GET", f"/v1/apps/{aid}/usage"))


def advise(*, since: Any = None, until: Any = None, reserved: Optional[Sequence[str]] = None,
           reserved_factor: Optional[float] = None, client: Optional[Client] = None) -> List[dict]:
    """The duty-cycle advisor over [since, until) (default the last 7 days): for each function
    (and each app's sandboxes) and resource class, its duty cycle, concurrency, costs, the
    break-even utilisation and a ``recommendation`` (serverless, reserve or split, with the
    ``setting`` to apply and the ``monthly_saving``). ``reserved`` prices reserved capacity:
    ``["H100=2.50/h", "cpu=0.03/h"]``; others are serverless × ``reserved_factor`` (0.5)."""
    q: Dict[str, Any] = {"since": _when("since", since), "until": _when("until", until),
                         "reserved": list(reserved or []) or None, "reserved_factor": reserved_factor}
    return (client or get_client()).json("GET", "/v1/billing/advise", query=q).get("advice") or []


class WorkspaceBillingManager:
    """``Workspace.billing``."""

    def __init__(self, client: Optional[Client]):
        self._client = client

    def report(self, *, start: Any, end: Any = None, resolution: str = "d",
               tag_names: Optional[Sequence[str]] = None, tz: Optional[str] = None) -> List[WorkspaceBillingReportItem]:
        """The workspace's cost report; each row has ``cost_by_resource``."""
        return workspace_billing_report(start=start, end=end, resolution=resolution, tag_names=tag_names,
                                        tz=tz, client=self._client)

    def rates(self) -> dict:
        """The price table."""
        return rates(client=self._client)


class Workspace:
    """The workspace the credentials in use belong to (``Workspace.from_context()``)."""

    def __init__(self, client: Optional[Client] = None):
        self._client = client
        self._info: Optional[dict] = None
        self.billing = WorkspaceBillingManager(client)

    @classmethod
    def from_context(cls, *, client: Optional[Client] = None) -> "Workspace":
        return cls(client)

    def _whoami(self) -> dict:
        if self._info is None:
            self._info = (self._client or get_client()).json("GET", "/v1/whoami")
        return self._info

    @property
    def name(self) -> str:
        return self._whoami().get("workspace_name", "")

    @property
    def object_id(self) -> str:
        return self._whoami().get("workspace_id", "")


def budgets(*, client: Optional[Client] = None) -> List[dict]:
    """The workspace's monthly budgets: ``scope`` (workspace, app or tag), ``target``,
    ``monthly_limit``, ``spent`` this month and ``state`` (ok, warning or exceeded)."""
    return (client or get_client()).json("GET", "/v1/billing/budgets").get("budgets") or []


def set_budget(*, scope: str, monthly_limit: float, target: str = "", warn_at: Optional[float] = None,
               stop_running: bool = False, client: Optional[Client] = None) -> dict:
    """Set a monthly budget (owners only) on the workspace, an app (``target``: its id) or a tag
    (``target``: ``"key=value"``). At the limit, new containers in its scope are refused; with
    ``stop_running``, running ones are stopped too."""
    body = {"scope": scope, "target": target, "monthly_limit": monthly_limit, "stop_running": stop_running}
    if warn_at is not None:
        body["warn_at"] = warn_at
    return (client or get_client()).json("POST", "/v1/billing/budgets", json=body)


def delete_budget(budget_id: str, *, client: Optional[Client] = None) -> None:
    """Remove a budget (owners only)."""
    (client or get_client()).request("DELETE", f"/v1/billing/budgets/{budget_id}")
