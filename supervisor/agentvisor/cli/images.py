"""The images in the CLI: `agentvisor image build` (the sandbox image) and `agentvisor image
build-supervisor` (the server's own image, for docker compose). Each is one call of
agentvisor.sandbox.images or .server_image, imported when the command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from agentvisor.cli.render import console

BaseImageOpt = Annotated[
    str | None,
    typer.Option(
        "--base-image",
        help="The Debian bookworm base (default: debian:bookworm-slim, else one made locally).",
    ),
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Rebuild every layer.")]


def register(app: typer.Typer) -> None:
    image = typer.Typer(
        help="Build the images: the agents' sandbox, the server's own (for docker compose).",
        no_args_is_help=True,
    )
    app.add_typer(image, name="image")

    @image.command("build")
    def build(
        agent_clis: Annotated[
            str, typer.Option("--agent-clis", help="Agent CLIs in the image: claude, or none.")
        ] = "claude",
        tag: Annotated[
            str | None,
            typer.Option(
                "--tag",
                help="Image tag (default agentvisor/sandbox:latest; :test with --agent-clis none).",
            ),
        ] = None,
        base_image: BaseImageOpt = None,
        extra_ca: Annotated[
            str,
            typer.Option(
                "--extra-ca",
                metavar="PEM|none|auto",
                help="CA certificates the image trusts too: a PEM bundle, none, or auto "
                "(the host's, from AGENTVISOR_EXTRA_CA, SSL_CERT_FILE, ...).",
            ),
        ] = "auto",
        uid: Annotated[int, typer.Option("--uid", help="Build-time uid of `agent`.")] = 1000,
        gid: Annotated[int, typer.Option("--gid", help="Build-time gid of `agent`.")] = 1000,
        no_cache: NoCacheOpt = False,
    ) -> None:
        """Build the sandbox image (and its base, locally when no registry answers)."""
        from agentvisor.sandbox import images

        built = tag or images.default_tag(agent_clis)
        image_id = images.build_sandbox_image(
            tag=built,
            agent_clis=agent_clis,
            extra_ca=images.extra_ca_choice(extra_ca),
            base_image=base_image,
            agent_uid=uid,
            agent_gid=gid,
            no_cache=no_cache,
            progress=images.to_stderr,
        )
        console.print(f"{built} {image_id}", markup=False, highlight=False)

    @image.command("build-supervisor")
    def build_supervisor(
        tag: Annotated[
            str, typer.Option("--tag", help="Image tag.")
        ] = "agentvisor/supervisor:latest",
        base_image: BaseImageOpt = None,
        no_cache: NoCacheOpt = False,
    ) -> None:
        """Build the server's own image, for docker compose (from a source checkout)."""
        from agentvisor.sandbox import images, server_image

        image_id = server_image.build_server_image(tag, base_image, no_cache, images.to_stderr)
        console.print(f"{tag} {image_id}", markup=False, highlight=False)
