"""A project's egress allowlist as the operator set it: `egress_allow` in the state dir's
config.toml (every project) and the project's own entries in the store (`up --allow`,
`agentvisor egress allow|deny`). Never from a file in the project."""

from __future__ import annotations

import json
from typing import Any

from agentvisor.config import Settings
from agentvisor.errors import InvalidInput, NotFound
from agentvisor.server.egress.rules import Rule, RuleError, canonical_entry, parse_entries
from agentvisor.store.database import Row, Store, insert_row

EVENT_KIND = "egress.request"


def checked_entry(entry: str) -> str:
    try:
        return canonical_entry(entry)
    except RuleError as error:
        raise InvalidInput(str(error)) from None


def settings_entries(settings: Settings) -> list[str]:
    try:
        return [canonical_entry(e) for e in settings.egress_allow]
    except RuleError as error:
        raise InvalidInput(f"egress_allow in config.toml: {error}") from None


def project_entries(store: Store, project_id: int) -> list[Row]:
    return store.fetch_all(
        "SELECT entry, origin, created_at FROM egress_rules WHERE project_id = ? ORDER BY entry",
        (project_id,),
    )


def rules_for(settings: Settings, store: Store, project_id: int) -> list[Rule]:
    entries = settings_entries(settings) + [r["entry"] for r in project_entries(store, project_id)]
    return parse_entries(entries)


def allow(store: Store, project_id: int, entry: str, origin: str = "operator") -> Row:
    entry = checked_entry(entry)
    with store.transaction() as db:
        found = store.fetch_one(
            "SELECT id FROM egress_rules WHERE project_id = ? AND entry = ?", (project_id, entry)
        )
        if found is None:
            insert_row(
                db,
                "egress_rules",
                {
                    "project_id": project_id,
                    "entry": entry,
                    "created_at": store.clock.now(),
                    "origin": origin,
                },
            )
            store.log_event("egress.rule_added", project_id, None, {"entry": entry}, db=db)
    return {"entry": entry, "origin": origin}


def deny(settings: Settings, store: Store, project_id: int, entry: str) -> Row:
    entry = checked_entry(entry)
    with store.transaction() as db:
        gone = db.execute(
            "DELETE FROM egress_rules WHERE project_id = ? AND entry = ?", (project_id, entry)
        ).rowcount
        if gone:
            store.log_event("egress.rule_removed", project_id, None, {"entry": entry}, db=db)
    if not gone:
        if entry in settings_entries(settings):
            raise InvalidInput(
                f"{entry} is allowed for every project by egress_allow in "
                f"{settings.state_dir / 'config.toml'}; remove it there and restart the server"
            )
        raise NotFound(f"{entry} is not on this project's allowlist (agentvisor egress list)")
    return {"entry": entry}


def listing(settings: Settings, store: Store, project_id: int) -> list[Row]:
    rows: list[Row] = [{"entry": e, "origin": "config.toml"} for e in settings_entries(settings)]
    return rows + [
        {"entry": r["entry"], "origin": r["origin"]} for r in project_entries(store, project_id)
    ]


def requests(
    store: Store, project_id: int | None, denied_only: bool = False, limit: int = 200
) -> list[dict[str, Any]]:
    """The newest egress requests, newest first, as stored (agent strings raw: render them)."""
    where = ["kind = ?"]
    params: list[Any] = [EVENT_KIND]
    if project_id is not None:
        where.append("project_id = ?")
        params.append(project_id)
    if denied_only:
        where.append("json_extract(data, '$.allowed') = 0")
    rows = store.fetch_all(
        f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    for row in rows:
        row["data"] = json.loads(row["data"] or "{}")
    return rows
