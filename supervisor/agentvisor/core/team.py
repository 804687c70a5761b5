"""Team composition: recognise the kind of project a spec describes and pick the agents for it.

Pure functions over the spec text; every choice comes with sentences that explain it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from agentvisor.errors import InvalidInput

ORCHESTRATOR = "orchestrator"
OPERATOR = "operator"  # the human who runs agentvisor; the orchestrator reports to them
# agentvisor itself: the sender of the notices it composes (usage limits, budgets, watchdog).
# No token maps to it, and no role may take its name (nor the operator's).
AGENTVISOR = "agentvisor"
# What a pane header shows for a sender that is not a plain name (agent_shim/text.py).
UNKNOWN_SENDER = "unknown"
RESERVED_NAMES = {
    OPERATOR: "the human who runs agentvisor",
    AGENTVISOR: "the notices agentvisor itself sends",
    UNKNOWN_SENDER: "a sender that cannot be shown",
}
ROLE_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
MAX_ROLE_NAME_CHARS = 32
MAX_TEAM_SIZE = 16  # every agent is a container; more than this is almost surely a mistake
GENERIC_BRIEFING = "generic"
_NUMBERED = re.compile(r"(.+?)-\d+\Z")  # developer-2 is a second developer
# Roles with a briefing of their own; a numbered one (developer-2) gets its base role's, and
# any other valid name gets the generic briefing.
KNOWN_ROLES = (
    "orchestrator",
    "project-manager",
    "developer",
    "tester",
    "test-runner",
    "sysadmin",
    "devops",
    "security",
    "reviewer",
    "docs",
)
# When a plan caps the team, roles are kept in this order (the orchestrator is never cut).
_KEEP_ORDER = (
    "orchestrator",
    "developer",
    "tester",
    "devops",
    "sysadmin",
    "security",
    "project-manager",
    "reviewer",
    "test-runner",
    "docs",
)
# Agents allowed by each Claude subscription, the orchestrator included.
PLAN_LIMITS = {"pro": 3, "max5": 5, "max20": 8, "console": MAX_TEAM_SIZE}
# "console": API billing through the Anthropic Console (the old tool's plan of that name) has
# no subscription window to share, so only the team size limit applies.
# The old tool's team types, by the type whose team fits them.
TYPE_ALIASES = {"code-project": "general"}
# A type needs at least this score to be chosen; below it the general team is used.
MIN_TYPE_SCORE = 4
# A keyword counts at most this many times, so one repeated word cannot decide alone.
MAX_COUNTED_REPEATS = 3


@dataclass(frozen=True)
class ProjectType:
    name: str
    label: str
    team: tuple[str, ...]  # in the order shown to the user, orchestrator first
    keywords: tuple[tuple[str, int], ...]  # (word or phrase, weight)


def _weighted(groups: dict[int, str]) -> tuple[tuple[str, int], ...]:
    return tuple(
        (word.strip(), weight) for weight, words in groups.items() for word in words.split(",")
    )


PROJECT_TYPES: tuple[ProjectType, ...] = (
    ProjectType(
        "web-application",
        "web application",
        ("orchestrator", "project-manager", "developer", "tester", "test-runner"),
        _weighted(
            {
                4: "web app, web application",
                3: "website, web page, react, vue, angular, svelte, next.js, nextjs, tailwind",
                2: "frontend, front end, django, rails, single page, spa, html, css, browser",
                1: "responsive, dashboard, ui, page, login, sign up, form",
            }
        ),
    ),
    ProjectType(
        "api-service",
        "API service",
        ("orchestrator", "project-manager", "developer", "tester", "security", "test-runner"),
        _weighted(
            {
                4: "grpc, openapi, microservice, fastapi",
                3: "rest api, restful, graphql, swagger, endpoint",
                2: "api, express, backend, webhook, status code, rate limit, pagination, jwt",
                1: "json, http, authentication, postgres, postgresql",
            }
        ),
    ),
    ProjectType(
        "library",
        "library",
        ("orchestrator", "developer", "tester", "reviewer", "docs"),
        _weighted(
            {
                4: "sdk, pypi, npm package, crate, crates.io",
                3: "library, public api, semver, semantic versioning, bindings",
                2: "package, reusable, docstring, type hints, wheel",
                1: "import, dependency",
            }
        ),
    ),
    ProjectType(
        "data-pipeline",
        "data pipeline",
        ("orchestrator", "project-manager", "developer", "tester", "devops", "test-runner"),
        _weighted(
            {
                5: "data pipeline",
                4: "etl, elt, airflow, dagster, dbt, parquet, data warehouse, bigquery",
                3: "ingest, ingestion, prefect, spark, kafka, snowflake",
                2: "warehouse, pipeline, batch, dataset, csv, deduplicate",
                1: "stream, transform, records, schema, nightly",
            }
        ),
    ),
    ProjectType(
        "system-deployment",
        "system deployment",
        ("orchestrator", "project-manager", "sysadmin", "devops", "security"),
        _weighted(
            {
                4: "systemd, ufw, vps, reverse proxy, hardening, harden, sysadmin",
                3: "nginx, let's encrypt, letsencrypt, certbot, firewall",
                2: "deploy, deployment, server, apache, tls, ssl, certificate, ubuntu, debian, "
                "provision, backup, monitoring, ssh, load balancer, docker compose",
                1: "production, uptime, cron, rollback, host",
            }
        ),
    ),
    ProjectType(
        "infrastructure-as-code",
        "infrastructure-as-code project",
        ("orchestrator", "project-manager", "devops", "security", "reviewer"),
        _weighted(
            {
                6: "infrastructure as code",
                5: "iac, terraform, opentofu, pulumi, cloudformation",
                4: "cdk, bicep, crossplane",
                3: "ansible, helm, vpc, subnet, iam, remote state",
                2: "kubernetes, k8s, state file",
                1: "aws, gcp, azure, s3, module, provider",
            }
        ),
    ),
    ProjectType(
        "cli-tool",
        "command-line tool",
        ("orchestrator", "developer", "tester", "test-runner", "docs"),
        _weighted(
            {
                4: "cli, command line, subcommand, argparse, typer, clap, cobra",
                3: "stdin, stdout, exit code, exit status, --help, man page",
                2: "terminal, click, stderr",
                1: "flag, option, shell, pipe",
            }
        ),
    ),
    ProjectType(
        "mobile-app",
        "mobile app",
        ("orchestrator", "project-manager", "developer", "tester", "test-runner"),
        _weighted(
            {
                5: "react native, flutter, swiftui, jetpack compose",
                4: "ios, android, xcode, app store, play store, testflight",
                3: "mobile, mobile app, push notification",
                2: "swift, kotlin, tablet, phone, expo",
            }
        ),
    ),
)
GENERAL = ProjectType(
    "general", "general project", ("orchestrator", "project-manager", "developer", "tester"), ()
)
_TYPES = {t.name: t for t in (*PROJECT_TYPES, GENERAL)}


def _index_keywords() -> dict[str, list[tuple[str, int]]]:
    """keyword -> [(project type, weight)]"""
    index: dict[str, list[tuple[str, int]]] = {}
    for project_type in PROJECT_TYPES:
        for word, weight in project_type.keywords:
            index.setdefault(word, []).append((project_type.name, weight))
    return index


_WEIGHTS = _index_keywords()
# One pass over the text finds every keyword: whole words only, a plural `s` or `es` allowed,
# a space in a phrase also matching a hyphen or a line break, and the longest phrase winning
# where several start at the same place ("react native" rather than "react"). The lookahead
# skips places no keyword can start at quickly (every keyword starts with a letter or `--`).
_KEYWORDS = re.compile(
    r"(?<![\w-])(?=[a-z]|--)(?:"
    + "|".join(
        r"[\s-]+".join(re.escape(part) for part in word.split())
        for word in sorted(_WEIGHTS, key=len, reverse=True)
    )
    + r")(?:e?s)?(?![\w-])",
    re.IGNORECASE,
)


# Letters that re.IGNORECASE equates with an ASCII letter but str.lower() does not turn into it.
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


def _keyword_of(found: str) -> str | None:
    key = re.sub(r"(?<=\w)[\s-]+(?=\w)", " ", found.translate(_FOLD).lower())
    for candidate in (key, key[:-1], key[:-2]):
        if candidate in _WEIGHTS:
            return candidate
    return None


@dataclass(frozen=True)
class KeywordMatch:
    keyword: str
    count: int  # occurrences in the spec
    points: int  # weight times the count, the count capped at MAX_COUNTED_REPEATS


@dataclass(frozen=True)
class TypeScore:
    project_type: str
    score: int
    matches: tuple[KeywordMatch, ...]  # highest points first


@dataclass(frozen=True)
class Classification:
    project_type: str  # "general" when no type reached MIN_TYPE_SCORE
    scores: tuple[TypeScore, ...]  # every type, best first (ties in PROJECT_TYPES order)

    @property
    def best(self) -> TypeScore:
        return self.scores[0]


@dataclass(frozen=True)
class TeamPlan:
    project_type: str
    roles: tuple[str, ...]  # orchestrator first
    reasons: tuple[str, ...]  # sentences for a human: why this type and this team
    dropped: tuple[str, ...] = ()  # roles cut to fit the plan's cap
    plan: str | None = None  # pro | max5 | max20, when one was given


def project_type_names() -> tuple[str, ...]:
    return tuple(_TYPES)


def label_of(project_type: str) -> str:
    return _TYPES[project_type].label if project_type in _TYPES else project_type


def classify(text: str) -> Classification:
    """Score the spec against every project type by the keywords it contains."""
    found = (_keyword_of(match.group()) for match in _KEYWORDS.finditer(text))
    counts = Counter(word for word in found if word is not None)
    matches: dict[str, list[KeywordMatch]] = {t.name: [] for t in PROJECT_TYPES}
    for word, count in counts.items():
        for type_name, weight in _WEIGHTS[word]:
            points = weight * min(count, MAX_COUNTED_REPEATS)
            matches[type_name].append(KeywordMatch(word, count, points))
    scores = [
        TypeScore(name, sum(m.points for m in hits), tuple(sorted(hits, key=lambda m: -m.points)))
        for name, hits in matches.items()
    ]
    scores.sort(key=lambda s: -s.score)
    best = scores[0]
    chosen = best.project_type if best.score >= MIN_TYPE_SCORE else GENERAL.name
    return Classification(chosen, tuple(scores))


def validate_role_name(role: str) -> str:
    """Return `role` if it is a valid role name, else raise `InvalidInput` saying why."""
    if not isinstance(role, str) or not ROLE_NAME.match(role) or len(role) > MAX_ROLE_NAME_CHARS:
        raise InvalidInput(
            f"role name {role!r} is not valid; use 1 to {MAX_ROLE_NAME_CHARS} characters: "
            "a lowercase letter, then lowercase letters, digits or hyphens (e.g. developer-2)."
        )
    if role in RESERVED_NAMES:
        raise InvalidInput(
            f"role name {role!r} is reserved for {RESERVED_NAMES[role]}; choose another name."
        )
    return role


def template_role(role: str) -> str:
    """The built-in briefing a role gets: its own, its base role's for a numbered one
    (developer-2 gets developer's), else the generic one."""
    if role in KNOWN_ROLES:
        return role
    base = _NUMBERED.match(role)
    if base and base.group(1) in KNOWN_ROLES:
        return base.group(1)
    return GENERIC_BRIEFING


def reports_to(role: str) -> str:
    """Whom `role` reports to: the orchestrator reports to the operator, the rest to it."""
    return OPERATOR if role == ORCHESTRATOR else ORCHESTRATOR


def plan_team(
    text: str,
    *,
    roles: Sequence[str] | str | None = None,
    team_type: str | None = None,
    plan: str | None = None,
) -> TeamPlan:
    """Choose the project type and the team for a spec.

    `team_type` forces the type instead of recognising it; `roles` replaces the type's team
    (as a list or a comma-separated string; the orchestrator is added first when missing);
    `plan` caps the team size, cutting the least important roles first.
    """
    plan = None if plan is None else plan.strip().lower()
    limit = _plan_limit(plan)
    reasons: list[str] = []
    if team_type is not None:
        project_type = _TYPES[_normalise_type(team_type)]
        reasons.append(f"Project type {project_type.label} was given, so the spec was not read.")
    else:
        classification = classify(text)
        project_type = _TYPES[classification.project_type]
        reasons.append(_explain(classification))

    if roles is None:
        team: tuple[str, ...] = project_type.team
        reasons.append(f"Team for {_a(project_type.label)}: {', '.join(team)}.")
        keep_order: tuple[str, ...] = _KEEP_ORDER
    else:
        team = _explicit_roles(roles, reasons)
        keep_order = team  # the user's own order says what matters most

    dropped: tuple[str, ...] = ()
    if limit is not None and len(team) > limit:
        keep = set(sorted(team, key=lambda r: _rank(r, keep_order))[:limit])
        dropped = tuple(r for r in team if r not in keep)
        team = tuple(r for r in team if r in keep)
        reasons.append(
            f"Plan {plan} allows {limit} agents, so {', '.join(dropped)} "
            f"{'was' if len(dropped) == 1 else 'were'} left out."
        )
    return TeamPlan(
        project_type=project_type.name,
        roles=team,
        reasons=tuple(reasons),
        dropped=dropped,
        plan=plan,
    )


def describe_plan(plan: TeamPlan) -> list[str]:
    """The lines `agentvisor plan SPEC` prints."""
    lines = [
        f"Project type: {label_of(plan.project_type)} ({plan.project_type})",
        f"Team ({len(plan.roles)} agents{f', plan {plan.plan}' if plan.plan else ''}):",
    ]
    width = max(len(role) for role in plan.roles)
    for number, role in enumerate(plan.roles, start=1):
        generic = ", generic briefing" if template_role(role) == GENERIC_BRIEFING else ""
        lines.append(f"  {number}. {role:<{width}}  reports to {reports_to(role)}{generic}")
    if plan.dropped:
        lines.append(f"Left out: {', '.join(plan.dropped)}")
    lines.append("Why:")
    lines.extend(f"  - {reason}" for reason in plan.reasons)
    return lines


def _explain(classification: Classification) -> str:
    best = classification.best
    if classification.project_type == GENERAL.name:
        if best.score == 0:
            return "No project-type keywords matched, so the general team is used."
        return (
            f"No project type scored {MIN_TYPE_SCORE} or more (best: {label_of(best.project_type)}"
            f" with {best.score}), so the general team is used."
        )
    words = ", ".join(
        m.keyword if m.count == 1 else f"{m.keyword} ×{m.count}" for m in best.matches
    )
    sentence = (
        f"Recognised {_a(label_of(best.project_type))} (score {best.score}) from the words: {words}"
    )
    runner_up = classification.scores[1]
    if runner_up.score:
        sentence += f"; next best {label_of(runner_up.project_type)} with {runner_up.score}"
    return sentence + "."


def _explicit_roles(roles: Sequence[str] | str, reasons: list[str]) -> tuple[str, ...]:
    if isinstance(roles, str):
        given = [n.strip() for n in roles.split(",") if n.strip()]
    else:
        given = [n.strip() if isinstance(n, str) else n for n in roles]
    # The old tool's spellings: documentation_writer is documentation-writer.
    names = [n.lower().replace("_", "-") if isinstance(n, str) else n for n in given]
    renamed = [f"{old} as {new}" for old, new in zip(given, names, strict=True) if old != new]
    if renamed:
        reasons.append(f"Role names are lowercase with hyphens: {', '.join(renamed)}.")
    if not names:
        raise InvalidInput("the roles list is empty; name at least one role, e.g. developer.")
    seen: set[str] = set()
    for name in names:
        validate_role_name(name)
        if name in seen:
            raise InvalidInput(
                f"role {name!r} is listed twice; give each role once "
                "(number extra agents, e.g. developer-2)."
            )
        seen.add(name)
    if names[0] != ORCHESTRATOR:
        how = "moved" if ORCHESTRATOR in names else "added"
        names = [ORCHESTRATOR, *(n for n in names if n != ORCHESTRATOR)]
        reasons.append(f"The orchestrator was {how} first: every team has one, leading it.")
    if len(names) > MAX_TEAM_SIZE:
        raise InvalidInput(
            f"the roles make a team of {len(names)} agents with the orchestrator, more than "
            f"the {MAX_TEAM_SIZE} a team may have; name fewer roles."
        )
    reasons.append(f"Team given with roles: {', '.join(names)}.")
    return tuple(names)


def _normalise_type(team_type: str) -> str:
    name = "-".join(team_type.strip().lower().replace("_", " ").split())
    name = TYPE_ALIASES.get(name, name)
    if name not in _TYPES:
        raise InvalidInput(
            f"team type {team_type!r} is not known; use one of: {', '.join(_TYPES)}."
        )
    return name


def _plan_limit(plan: str | None) -> int | None:
    if plan is None:
        return None
    limit = PLAN_LIMITS.get(plan)
    if limit is None:
        raise InvalidInput(f"plan {plan!r} is not known; use one of: {', '.join(PLAN_LIMITS)}.")
    return limit


def _rank(role: str, keep_order: Sequence[str]) -> int:
    if role == ORCHESTRATOR:
        return -1
    return keep_order.index(role) if role in keep_order else len(keep_order)


def _a(label: str) -> str:
    return f"{'an' if label[:1].lower() in 'aeiou' else 'a'} {label}"
