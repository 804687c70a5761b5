"""One typed settings object, built once from defaults, a TOML file, the environment and flags.

Order of precedence (later wins): defaults, `<state>/config.toml`, `AGENTVISOR_*` variables,
command-line flags. Everything else receives a `Settings` and never reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from agentvisor.errors import InvalidInput

DEFAULT_STATE_DIR = Path("~/.local/state/agentvisor")
# The sandbox user on a root host: in Debian's range of ids allocated on demand only, so on
# almost every machine no login, and no file outside the agents' clones, has it.
SANDBOX_UID = 64100
SANDBOX_GID = 64100


@dataclass(frozen=True)
class Settings:
    state_dir: Path = field(default_factory=lambda: DEFAULT_STATE_DIR.expanduser())
    tcp_host: str = "127.0.0.1"
    tcp_port: int | None = None  # the loopback TCP listener, only when asked
    # FULL: an answered request survives a power cut. NORMAL: faster, survives a crash of
    # agentvisor or of the sandboxes, may lose the last transactions on a power cut.
    sqlite_synchronous: str = "FULL"
    lease_s: float = 60.0  # how long a leased message stays with a shim before redelivery
    max_attempts: int = 20  # deliveries tried before a message is marked failed
    max_body_bytes: int = 256 * 1024
    max_note_bytes: int = 16 * 1024
    min_every_minutes: float = 1.0  # shortest recurrence a check-in may have
    scheduler_max_sleep_s: float = 30.0  # safety net for check-ins added by another process
    orchestrator_checkin_minutes: float = 30.0
    commit_reminder_minutes: float = 30.0
    image: str = "agentvisor/sandbox:latest"  # with Claude Code, for the claude profile
    demo_image: str = "agentvisor/sandbox:demo"  # without agent CLIs: demo and generic profiles
    memory_mb: int = 4096
    cpus: float = 1.0
    pids: int = 512
    tmpfs_mb: int = 512
    # Default: on a root host a dedicated uid/gid that is no login of the host's (see
    # sandbox_ids); on a non-root host the host user's own, which alone can own the clones.
    sandbox_uid: int | None = None
    sandbox_gid: int | None = None
    # May an agent rewrite its own branch (force-push)? Every update is recorded either way.
    allow_force_push: bool = True
    max_push_mb: int = 512  # the largest push an agent may send, in MiB
    # May an agent list every message and check-in of its project? Off: only the ones it sent,
    # scheduled or is the recipient of (docs/contracts.md#who-may-do-what).
    agents_read_team_messages: bool = False
    agent: str = "auto"  # auto | claude | demo | generic
    agent_command: str | None = None  # generic profile
    ready_pattern: str | None = None  # generic profile
    # Claude Code's --permission-mode in the sandboxes: no prompts by default, the sandbox is
    # the boundary (docs/guides/claude-code.md).
    claude_permission_mode: str = "bypassPermissions"
    heartbeat_timeout_s: float = 30.0
    queue_concurrency: int = 1  # projects from the queue running at once
    project_timeout_minutes: float = 720.0  # a queued project not complete by then has failed
    queue_retries: int = 3  # retries of a failed queued project, each with the failure's context
    escalation_command: str | None = None  # run after the last retry failed (see docs)
    usage_limit_margin_s: float = 120.0  # wait this long past a usage limit's reset time
    stall_minutes: float = 15.0  # a pane unchanged this long with undelivered work is nudged
    max_restarts: int = 5  # a sandbox restarted this often is marked failed
    watchdog_interval_s: float = 10.0  # between passes when the engine's events are not read
    watchdog_events: bool = True  # a pass at each sandbox death or start (guides/operations)
    clock_offset_file: str | None = None  # tests only: shift the server's clock
    # The egress proxy (docs/guides/network.md): entries every project may reach, on top of
    # each project's own (`agentvisor egress allow`); nothing by default.
    egress_allow: tuple[str, ...] = ()
    egress_proxy: bool = True  # False: no proxy runs, sandboxes reach nothing outside
    egress_max_connections_per_agent: int = 32
    egress_max_connections: int = 256  # in all; a tunnel takes two threads
    egress_connect_timeout_s: float = 10.0
    egress_idle_timeout_s: float = 300.0  # a connection silent both ways this long is closed
    # Each agent's egress.request events per minute; the rest of a minute's requests become
    # one summary event (the counters count them all). 0: no limit.
    egress_events_per_minute: int = 120
    # The model broker (docs/sandboxes.md#credentials): where it forwards the agents' model
    # requests with the host's credential, and the CA bundle it trusts there (default: the
    # system's). The credential is the server's ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN or
    # Claude Code login (`claude_credentials_file`, default ~/.claude/.credentials.json).
    model_upstream: str = "https://api.anthropic.com"
    model_upstream_ca: str | None = None
    claude_credentials_file: str | None = None
    # The broker refreshes that login this long before it expires (or when the upstream
    # refuses it) and writes it back; the endpoint and client id are Claude Code 2.1.330's own
    # (its bundled OAuth config's TOKEN_URL and CLIENT_ID).
    claude_oauth_token_url: str = "https://platform.claude.com/v1/oauth/token"
    claude_oauth_client_id: str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    claude_oauth_refresh_margin_s: float = 300.0
    model_max_request_mb: int = 32  # the largest request body an agent may send the model
    # Model assist (docs/guides/teams.md#model-assisted-teams): agentvisor's own requests to
    # the model, through the broker's upstream and credential, counted against the project's
    # budget. `plan/up --refine` is the switch for the team; `model_assist` for the queue's
    # research step over a failed project before its retry (off: the retry as before).
    model_assist: bool = False
    model_assist_model: str = "claude-sonnet-4-5"
    model_assist_max_tokens: int = 2048
    model_assist_timeout_s: float = 120.0
    # A 429 whose reset is at least this far away pauses the agent (shorter ones Claude Code
    # retries by itself).
    usage_limit_min_pause_s: float = 60.0
    # Budgets, 0 for none; `agentvisor budget PROJECT ...` sets a project's own.
    budget_agent_tokens_per_day: int = 0
    budget_project_tokens: int = 0
    budget_project_hours: float = 0.0
    # Hub-spoke routing (docs/guides/operations.md): copies of critical messages between two
    # agents to `routing_copy_to`; `routing_hub_only` refuses agent-to-agent messages that do
    # not go through it. A project's own: `agentvisor routing PROJECT ...`.
    routing_copy_to: str = "orchestrator"
    routing_copy_kinds: tuple[str, ...] = ("completion", "failure", "blocked", "deploy")
    routing_copy_patterns: tuple[str, ...] = ("task complete", "deploy", "failed", "blocked")
    routing_hub_only: bool = False
    # Quotas per agent (docs/limits.md): over one, 429 with Retry-After; 0 turns one off.
    # The operator's requests are never counted.
    agent_messages_per_minute: int = 120
    agent_events_per_minute: int = 240
    agent_pending_checkins_max: int = 200
    project_stored_mb_max: int = 128  # message bodies, check-in notes and event data
    # Connections to the API (docs/limits.md): each sandbox has a socket of its own, counted
    # before any request is read; the host's socket (the operator's) has room of its own.
    api_max_connections_per_sandbox: int = 64
    api_max_connections: int = 4096  # all sandboxes together
    api_operator_max_connections: int = 256
    api_max_requests_per_sandbox: int = 16  # in the app at once; more wait their turn
    # Sandboxes' requests at work at once, taken in turns (round robin over sandboxes)
    api_sandbox_request_slots: int = 4
    # A sandbox's requests per second, on average (bursts of twice that); past it they are
    # paced (they wait), never refused. 0: no pacing.
    api_sandbox_requests_per_second: float = 50.0
    api_header_timeout_s: float = 10.0  # a connection that sends no request head is closed
    api_keep_alive_s: float = 5.0  # an idle connection between requests is closed
    # The same log line (same logger and format) at most this often per interval; then one
    # line says how many were dropped.
    log_repeat_max: int = 5
    log_repeat_interval_s: float = 60.0

    @property
    def db_path(self) -> Path:
        return self.state_dir / "agentvisor.db"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "sock"

    @property
    def socket_path(self) -> Path:
        """The host's API socket (the operator's CLI, the dashboard's tools): in the state
        folder, never mounted into a sandbox; each sandbox has a socket of its own
        (agentvisor.sandbox.sandbox_sockets, docs/limits.md)."""
        return self.state_dir / "api.sock"

    @property
    def operator_token_path(self) -> Path:
        return self.state_dir / "operator.token"

    @property
    def egress_socket_path(self) -> Path:
        """The egress proxy's socket, beside the API's (sandboxes mount the folder)."""
        return self.socket_dir / "egress.sock"

    @property
    def tokens_dir(self) -> Path:
        return self.state_dir / "tokens"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "server.pid"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "server.log"

    @property
    def git_hooks_dir(self) -> Path:
        """agentvisor's own hooks for pushes from agents (never the project's)."""
        return self.state_dir / "git-hooks"

    def sandbox_ids(self) -> tuple[int, int]:
        """The uid/gid sandboxes run as.

        On a root host: `SANDBOX_UID`:`SANDBOX_GID` unless set, an id that should be no account
        of the host's (`check_sandbox_ids` refuses one that is). On a non-root host: the host
        user's own, the only one whose files that user can make.
        """
        root = os.getuid() == 0
        uid = (
            self.sandbox_uid
            if self.sandbox_uid is not None
            else (SANDBOX_UID if root else os.getuid())
        )
        gid = (
            self.sandbox_gid
            if self.sandbox_gid is not None
            else (SANDBOX_GID if root else os.getgid())
        )
        return uid, gid


def _coerce(name: str, raw: Any, current: Any) -> Any:
    kind = type(current) if current is not None else None
    try:
        if name == "state_dir":
            return Path(str(raw)).expanduser()
        if kind is tuple:
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind is bool:
            return str(raw).lower() in {"1", "true", "yes", "on"}
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if name in {"tcp_port", "sandbox_uid", "sandbox_gid"}:
            return None if raw in (None, "") else int(raw)
        return raw if raw is None else str(raw) if not isinstance(raw, (int, float)) else raw
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"setting {name}={raw!r} is not valid: {exc}") from None


def load_settings(
    state_dir: str | Path | None = None, env: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    """Build the settings: defaults, then config.toml, then AGENTVISOR_* env, then overrides."""
    env = dict(os.environ if env is None else env)
    settings = Settings()
    state = state_dir or env.get("AGENTVISOR_STATE")
    if state:
        settings = replace(settings, state_dir=Path(state).expanduser())
    names = {f.name for f in fields(Settings)}
    config_file = settings.state_dir / "config.toml"
    if config_file.is_file():
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(
                f"{config_file} is not valid TOML: {exc}; fix or remove it"
            ) from None
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidInput(
                f"{config_file}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(names))}"
            )
        data.pop("state_dir", None)
        settings = replace(
            settings, **{k: _coerce(k, v, getattr(settings, k)) for k, v in data.items()}
        )
    from_env = {}
    for name in names - {"state_dir"}:
        raw = env.get(f"AGENTVISOR_{name.upper()}")
        if raw is not None:
            from_env[name] = _coerce(name, raw, getattr(settings, name))
    settings = replace(settings, **from_env)
    clean = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(clean) - names)
    if unknown:
        raise InvalidInput(f"unknown setting(s): {', '.join(unknown)}")
    return replace(settings, **clean)
