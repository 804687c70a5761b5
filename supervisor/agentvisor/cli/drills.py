"""The drills in the CLI: `agentvisor chaos` and `agentvisor load`, each one call of
`agentvisor.drills` on a throwaway team, printed as a table (or one JSON object with --json).
Progress goes to stderr; the exit code is 1 when a message was lost, doubled or misdelivered."""

from __future__ import annotations

from typing import Annotated

import typer

from agentvisor.cli.args import finite_float, non_negative_float
from agentvisor.cli.render import console, err_console, print_json, table
from agentvisor.config import load_settings
from agentvisor.drills.tally import KILL_KINDS

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
ImageOpt = Annotated[
    str | None,
    typer.Option("--image", help="Demo sandbox image (default: the demo_image setting, else "
                 "agentvisor/sandbox:test from 'make image-test')."),
]  # fmt: skip


def _progress(line: str) -> None:
    err_console.print(line, markup=False, highlight=False)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _image(ctx: typer.Context, wanted: str | None) -> str:
    from agentvisor.drills.fleet import resolve_image

    return resolve_image(load_settings(ctx.obj.state), wanted)


def chaos(
    ctx: typer.Context,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration", help="Seconds of stream and kills (default 120).", parser=finite_float
        ),
    ] = None,
    kills: Annotated[
        int | None, typer.Option("--kills", help="This many kills (with --duration: within it).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the kill plan and the recipients.")
    ] = None,
    sandboxes: Annotated[int, typer.Option("--sandboxes", help="Demo sandboxes.")] = 3,
    rate: Annotated[
        float, typer.Option("--rate", help="Messages per second.", parser=finite_float)
    ] = 4.0,
    kinds: Annotated[
        str, typer.Option("--kinds", help=f"What to kill, comma separated: {','.join(KILL_KINDS)}.")
    ] = ",".join(KILL_KINDS),
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout", help="Seconds to wait for the drain.", parser=non_negative_float
        ),
    ] = 180.0,
    image: ImageOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Kill the server, shims, sandboxes and agent CLIs of a throwaway demo team at random while
    a numbered stream of messages flows; then check each arrived exactly once, in its pane."""
    from agentvisor.drills.chaos import ChaosOptions, run_chaos
    from agentvisor.drills.fleet import sigterm_as_interrupt

    options = ChaosOptions(
        duration_s=duration,
        kills=kills,
        seed=seed,
        sandboxes=sandboxes,
        rate=rate,
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
        drain_timeout_s=drain_timeout,
        image=image,
    )
    options.check()
    with sigterm_as_interrupt():
        report = run_chaos(options, _image(ctx, image), _progress)
    data = report.as_dict()
    if json_out:
        print_json(data)
    else:
        t = report.tally
        table(
            f"agentvisor chaos, seed {report.seed}, {report.sandboxes} sandboxes, "
            f"{report.duration_s:.0f} s",
            ["measure", "value"],
            [
                ["sent", t.sent],
                ["delivered", t.delivered],
                ["lost", f"{t.lost} ({t.undelivered} never delivered, {t.unwitnessed} not in "
                 "the pane)"],
                ["doubled", t.doubled],
                ["wrong pane", t.wrong_pane],
                ["latency p50 / p90 / p99", " / ".join(_ms(t.latency(p)) for p in (50, 90, 99))],
                ["time to drain", "timed out" if report.drain_s is None
                 else f"{report.drain_s:.1f} s"],
                *([f"kills: {kind}", count] for kind, count in report.kills.items()),
            ],
        )  # fmt: skip
        _examples(data["examples"])
        console.print("ok: every message exactly once, in its own pane" if report.ok
                      else "FAILED: see lost, doubled, wrong pane and the drain above")  # fmt: skip
    if not report.ok:
        raise typer.Exit(1)


def load(
    ctx: typer.Context,
    sandboxes: Annotated[int, typer.Option("--sandboxes", help="Demo sandboxes.")] = 20,
    messages: Annotated[int, typer.Option("--messages", help="Messages to send.")] = 2000,
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            help="Messages per second offered; 0: as fast as possible.",
            parser=non_negative_float,
        ),
    ] = 0.0,
    clients: Annotated[int, typer.Option("--clients", help="Client threads sending.")] = 8,
    idle_s: Annotated[
        float,
        typer.Option(
            "--idle-s",
            help="Seconds the idle server's CPU is measured (0: not).",
            parser=non_negative_float,
        ),
    ] = 10.0,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout", help="Seconds to wait for the drain.", parser=non_negative_float
        ),
    ] = 300.0,
    image: ImageOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Offer a throwaway demo team messages at a rate from many clients; measure accepted/s,
    verified deliveries/s, end-to-end latency and the server's CPU, and check nothing was
    lost or doubled."""
    from agentvisor.drills.fleet import sigterm_as_interrupt
    from agentvisor.drills.load import LoadOptions, run_load

    options = LoadOptions(sandboxes, messages, rate, clients, idle_s, drain_timeout, image)
    options.check()
    with sigterm_as_interrupt():
        report = run_load(options, _image(ctx, image), _progress)
    data = report.as_dict()
    if json_out:
        print_json(data)
    else:
        t = report.tally
        offered = f"{rate:g}/s offered" if rate else "as fast as possible"
        per_sandbox = report.cpu_idle_per_sandbox_pct
        table(
            f"agentvisor load, {sandboxes} sandboxes, {messages} messages, {clients} clients, "
            f"{offered}",
            ["measure", "value"],
            [
                ["accepted/s", f"{report.accepted_per_s:.0f}"],
                ["verified deliveries/s", "-" if report.delivered_per_s is None
                 else f"{report.delivered_per_s:.0f}"],
                ["end-to-end p50 / p90 / p99",
                 " / ".join(_ms(t.latency(p)) for p in (50, 90, 99))],
                ["sent / delivered", f"{t.sent} / {t.delivered}"],
                ["lost / doubled / wrong pane", f"{t.lost} / {t.doubled} / {t.wrong_pane}"],
                ["time to drain", "timed out" if report.drain_s is None
                 else f"{report.drain_s:.1f} s"],
                ["server CPU during the run", f"{report.cpu_run_pct:.0f} % of a core"],
                ["server CPU idle", "-" if report.cpu_idle_pct is None
                 else f"{report.cpu_idle_pct:.2f} % of a core"],
                ["server CPU idle, no sandbox", "-" if report.cpu_baseline_pct is None
                 else f"{report.cpu_baseline_pct:.2f} % of a core"],
                ["server CPU idle per sandbox", "-" if per_sandbox is None
                 else f"{per_sandbox:.3f} % of a core (over the one with none)"],
            ],
        )  # fmt: skip
        _examples(data["examples"])
    if not report.ok:
        raise typer.Exit(1)


def _examples(examples: dict[str, list[int]]) -> None:
    for what, numbers in examples.items():
        console.print(f"{what}: messages {', '.join(map(str, numbers))}")


def register(app: typer.Typer) -> None:
    app.command("chaos")(chaos)
    app.command("load")(load)
