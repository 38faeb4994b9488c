"""`valueledger`: one command line for operators and auditors.

Every failure ends in one line on stderr, `valueledger: <what went wrong>`, and a non-zero exit:
1 when a verification found the ledger wrong, 2 for anything else (bad input, no server...).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import click
import msgspec

from eventstore.errors import EventStoreError

if TYPE_CHECKING:
    import asyncpg

    from eventstore.verify import Report
    from projections.metrics import ProjectionStatus
    from projections.projector import Projector
    from valueledger.serve import ServeRole
    from valueledger.settings import Settings

# Each command imports what it uses when it runs: the auditor's offline `verify --bundle`
# then loads the verifier alone, not the web framework, the database driver or Redis (a
# start-up of seconds became a fraction of one).

P = ParamSpec("P")
R = TypeVar("R")

EXIT_LEDGER_WRONG = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it: never mistaken for a verdict


class CommandError(click.ClickException):
    """A one-line failure with the error exit code."""

    exit_code = EXIT_ERROR

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"valueledger: {self.format_message()}", err=True)


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the failures an operator can meet into one line and exit code 2, never a trace."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            # click would say "Aborted!" and exit 1, which reads as "the ledger is wrong".
            click.echo("valueledger: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except Exception as error:
            if _no_schema(error):
                raise CommandError(
                    "this database holds no ledger schema; run `valueledger migrate` first"
                ) from None
            if not isinstance(error, _operator_errors()):
                raise
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CommandError(message) from None

    return wrapper


def _operator_errors() -> tuple[type[Exception], ...]:
    """What an operator can meet: bad input, a missing file, an unreachable or refusing
    database. The driver's errors count only once a command has loaded the driver."""
    errors: tuple[type[Exception], ...] = (EventStoreError, OSError, ValueError, LookupError)
    driver = sys.modules.get("asyncpg")
    if driver is not None:
        errors += (driver.PostgresError, driver.InterfaceError)
    return errors


def _no_schema(error: Exception) -> bool:
    driver = sys.modules.get("asyncpg")
    return driver is not None and isinstance(error, driver.UndefinedTableError)


def _settings() -> Settings:
    from valueledger.settings import Settings

    try:
        return Settings.from_env()
    except ValueError as error:
        raise CommandError(str(error)) from None


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    from valueledger.servers import servers

    with servers(settings, redis=False) as urls:
        yield urls.database_url


def _run(
    coroutine: Awaitable[R],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> R:
    async def main() -> R:
        return await coroutine

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


async def _owner_connection(database_url: str) -> asyncpg.Connection[asyncpg.Record]:
    import asyncpg

    return await asyncpg.connect(database_url)


@click.group()
@click.version_option(package_name="valueledger")
def main() -> None:
    """valueledger: onboarding to value-based billing, proven by a signed ledger.

    Configuration comes from the environment: DATABASE_URL and REDIS_URL (unset: embedded
    servers in VALUELEDGER_DATA_DIR, default ./.valueledger), VALUELEDGER_SIGNING_KEY (PEM path;
    default <data dir>/signing-key.pem, made on first run), VALUELEDGER_DB_ROLE.
    """


@main.command()
@one_line_errors
def migrate() -> None:
    """Apply schema.sql (idempotent) and register the signing key on first run."""
    from valueledger.bootstrap import prepare_database

    settings = _settings()
    with _database(settings) as url:
        _run(prepare_database(settings, url))
    click.echo("schema applied")


@main.group()
def keys() -> None:
    """The signing keys: list them, rotate to a new one."""


@keys.command("list")
@one_line_errors
def keys_list() -> None:
    """Every key that ever signed: id, validity, and which one is current."""
    from eventstore.db import apply_schema
    from eventstore.keys import list_keys

    settings = _settings()

    async def show(url: str) -> None:
        await apply_schema(url)
        connection = await _owner_connection(url)
        try:
            registered = await list_keys(connection)
        finally:
            await connection.close()
        if not registered:
            click.echo("no keys registered yet (run `valueledger migrate`)")
        for key in registered:
            until = f"{key.retired_at:%Y-%m-%dT%H:%M:%S.%fZ}" if key.retired_at else "current"
            click.echo(f"{key.key_id}  from {key.created_at:%Y-%m-%dT%H:%M:%S.%fZ}  to {until}")

    with _database(settings) as url:
        _run(show(url))


@keys.command("rotate")
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key to make current (default: generate one into the key file).",
)
@one_line_errors
def keys_rotate(source: Path | None) -> None:
    """Retire the current key and make a new one current, at one instant.

    Without --from, a new RSA-2048 key replaces the configured key file (mode 0600); the
    retired key's public half stays registered, so its receipts still verify. The file is
    replaced before the database registers the key, so that a running store finding its key
    retired always reloads the new one. Should the command die between the two steps, running
    stores go on signing with the old key (still current), a restarting one says its key "is
    not registered", and `valueledger keys rotate --from <the key file>` completes the rotation.
    Should the database refuse, the old file is put back.
    """
    from eventstore.keys import load_private_key, rotate_key, write_new_private_key
    from valueledger.bootstrap import prepare_database

    settings = _settings()
    target = settings.signing_key_path
    staged = target.with_name(target.name + ".next")
    kept = target.with_name(target.name + ".previous")
    new_key = load_private_key(source) if source else write_new_private_key(staged)

    async def rotate(url: str) -> str:
        # First, so that the first key it may register is the current one, never the new one.
        await prepare_database(settings, url)
        if source is None:
            kept.unlink(missing_ok=True)
            os.link(target, kept)
            staged.replace(target)
        connection = await _owner_connection(url)
        try:
            return (await rotate_key(connection, new_key)).key_id
        except BaseException:
            if source is None:
                kept.replace(target)
            raise
        finally:
            await connection.close()

    with _database(settings) as url:
        current = _run(rotate(url))
    if source is None:
        kept.unlink()
    click.echo(f"current key is now {current}")
    if source is not None and source.resolve() != target.resolve():
        click.echo(f"point VALUELEDGER_SIGNING_KEY at {source} before the next start")


@main.command()
@click.option("--tenant", required=True, help="The customer whose ledger to export.")
@click.option("--from-seq", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout."
)
@one_line_errors
def export(tenant: str, from_seq: int, output: Path | None) -> None:
    """Write TENANT's ledger as a bundle (valueledger-bundle/1, JSON Lines)."""
    from eventstore.bundle import export_bundle

    settings = _settings()

    async def write(url: str, out: IO[bytes]) -> int:
        connection = await _owner_connection(url)
        try:
            return await export_bundle(
                connection, tenant, out, datetime.now(UTC), from_seq=from_seq
            )
        finally:
            await connection.close()

    with _database(settings) as url:
        if output is None:
            _run(write(url, sys.stdout.buffer))
            sys.stdout.buffer.flush()
            return
        partial = output.with_name(output.name + ".partial")
        with partial.open("wb") as out:
            count = _run(write(url, out))
        partial.replace(output)
    click.echo(f"exported {count} records of {tenant} to {output}", err=True)


@main.command()
@click.option("--tenant", help="Print this customer's events in chain order.")
@click.option("--from-seq", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--projection",
    help="Rebuild this read model (a projector's name, or 'all') from position 0 and swap it in.",
)
@one_line_errors
def replay(tenant: str | None, from_seq: int, projection: str | None) -> None:
    """Print a tenant's events (--tenant), or rebuild read models from the ledger (--projection).

    A rebuild fills fresh tables while readers keep the old ones, then swaps them in at once.
    """
    if (tenant is None) == (projection is None):
        raise CommandError("give exactly one of --tenant (print events) or --projection (rebuild)")
    from eventstore.bundle import ledger_end, lending, record_pages
    from valueledger.bootstrap import prepare_database

    settings = _settings()
    if projection is not None:
        with _database(settings) as url:
            _run(prepare_database(settings, url))
            for name, cursor in _run(_rebuild(url, projection)):
                click.echo(f"rebuilt {name}: read models now at {cursor}", err=True)
        return
    assert tenant is not None  # noqa: S101 (one of the two was given)

    async def emit(url: str) -> None:
        connection = await _owner_connection(url)
        try:
            # Up to the head as it is now: records appended meanwhile are left for the next run.
            head = await ledger_end(connection, tenant)
            async for page in record_pages(lending(connection), tenant, from_seq, head):
                sys.stdout.buffer.write(b"".join(line + b"\n" for line in page))
        finally:
            await connection.close()
        sys.stdout.buffer.flush()

    with _database(settings) as url:
        _run(emit(url))


def _chosen_projectors(name: str) -> list[Projector]:
    from projections.registry import PROJECTORS

    known = {projector.name: projector for projector in PROJECTORS}
    if name == "all":
        return list(known.values())
    if name not in known:
        raise CommandError(f"no projector {name!r}; choose one of {', '.join(known)} or all")
    return [known[name]]


async def _rebuild(url: str, name: str) -> list[tuple[str, str]]:
    from projections.runner import rebuild

    chosen = _chosen_projectors(name)
    connection = await _owner_connection(url)
    try:
        total = await connection.fetchval("SELECT count(*) FROM events")
        rebuilt = []
        for projector in chosen:
            with _progress(total, f"rebuilding {projector.name}") as advance:
                cursor = await rebuild(connection, projector, progress=advance)
            rebuilt.append((projector.name, str(cursor)))
        return rebuilt
    finally:
        await connection.close()


@main.command("projectors")
@click.option("--only", "names", multiple=True, help="Run only these projectors (repeatable).")
@one_line_errors
def run_projectors_command(names: tuple[str, ...]) -> None:
    """Run the projectors until SIGTERM or SIGINT; checkpoints are saved with every batch."""
    from eventstore.db import create_pool
    from projections.cache import ReadModelCache, connect_cache
    from projections.registry import PROJECTORS
    from valueledger.bootstrap import prepare_database
    from valueledger.servers import servers
    from workers.projectors import run_projectors, stop_on_signals

    settings = _settings()
    chosen = [p for name in names for p in _chosen_projectors(name)] or list(PROJECTORS)

    async def work(url: str, redis_url: str) -> None:
        pool = await create_pool(url, settings.db_role or None, max_size=2 * len(chosen) + 2)
        client = connect_cache(redis_url)
        cache = ReadModelCache(client, settings.cache_prefix)
        stop = asyncio.Event()
        stop_on_signals(stop)
        try:
            await run_projectors(pool, chosen, stop, invalidate=cache.invalidate)
        finally:
            await pool.close()
            await client.aclose()

    with servers(settings) as urls:
        _run(prepare_database(settings, urls.database_url))
        _run(work(urls.service_database_url, urls.redis_url))


@main.group()
def projections() -> None:
    """Read models built from the ledger."""


@projections.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@one_line_errors
def projections_status(as_json: bool) -> None:
    """Each projector's checkpoint and how far it is behind the ledger (events and seconds)."""
    from eventstore.db import create_pool
    from projections.metrics import projection_status
    from projections.registry import PROJECTORS
    from valueledger.bootstrap import prepare_database

    settings = _settings()

    async def read(url: str) -> list[ProjectionStatus]:
        pool = await create_pool(url, settings.db_role or None, max_size=2)
        try:
            return await projection_status(pool, PROJECTORS)
        finally:
            await pool.close()

    with _database(settings) as url:
        _run(prepare_database(settings, url))
        statuses = _run(read(url))
    if as_json:
        click.echo(_json_line(statuses))
        return
    click.echo(f"{'projector':<12} {'checkpoint':<24} {'behind':>10} {'seconds':>9}  updated")
    for status in statuses:
        updated = status.updated_at.isoformat() if status.updated_at else "never"
        click.echo(
            f"{status.name:<12} {status.checkpoint!s:<24} {status.events_behind:>10}"
            f" {status.seconds_behind:>9.1f}  {updated}"
        )


@main.command()
@one_line_errors
def webhooks() -> None:
    """Each webhook endpoint's deliveries: how many are pending, delivered and failed."""
    from eventstore.db import create_pool
    from valueledger.bootstrap import prepare_database
    from workers.webhook_format import load_endpoints
    from workers.webhooks import delivery_counts

    settings = _settings()
    configured = (
        [endpoint.id for endpoint in load_endpoints(settings.webhooks)]
        if (settings.webhooks)
        else []
    )

    async def read(url: str) -> dict[tuple[str, str], int]:
        pool = await create_pool(url, settings.db_role or None, max_size=2)
        try:
            return await delivery_counts(pool)
        finally:
            await pool.close()

    with _database(settings) as url:
        _run(prepare_database(settings, url))
        counts = _run(read(url))
    named = sorted({endpoint for endpoint, _ in counts} | set(configured))
    if not named:
        click.echo("no webhook endpoints configured (VALUELEDGER_WEBHOOKS) and no deliveries")
        return
    click.echo(f"{'endpoint':<40} {'pending':>9} {'delivered':>10} {'failed':>8}")
    for endpoint in named:
        note = "" if endpoint in configured else "  (no longer configured)"
        click.echo(
            f"{endpoint:<40} {counts.get((endpoint, 'pending'), 0):>9}"
            f" {counts.get((endpoint, 'delivered'), 0):>10}"
            f" {counts.get((endpoint, 'failed'), 0):>8}{note}"
        )


def _progress(total: int, label: str) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    """A progress bar on an interactive stderr; nothing otherwise."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext(lambda _n: None)

    @contextlib.contextmanager
    def bar() -> Iterator[Callable[[int], None]]:
        with click.progressbar(length=total, label=label, file=sys.stderr) as shown:
            yield shown.update

    return bar()


class _ReportingCommand(click.Command):
    """A command whose `--json` promises a report on stdout: a machine reader gets one even
    when the command ends without a verdict (exit 2, bad input or no server), its `error`
    saying why, beside the usual one line on stderr."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        asked = list(args)  # parsing consumes `args`
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as error:
            if "--json" in asked:
                pinned = any(arg == "--key" or arg.startswith("--key=") for arg in asked)
                offline = any(arg == "--bundle" or arg.startswith("--bundle=") for arg in asked)
                _print_error_report(error.format_message(), pinned=pinned, offline=offline)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            if ctx.params.get("as_json"):
                _print_error_report(
                    error.format_message(),
                    pinned=bool(ctx.params.get("key_files")),
                    offline=ctx.params.get("bundle") is not None,
                )
            raise


_RAW_CONTROLS: Final = re.compile(rb"\x7f|\xc2[\x80-\x9f]")
"""DEL and the C1 controls in UTF-8 (the byte C2 only ever starts a character, so no match is
part of another): what msgspec leaves raw in JSON, where it escapes only the C0 controls."""


def _json_line(value: object) -> str:
    """`value` as JSON in which no control character stands raw: a report carries a hostile
    bundle's text (its tenant, say), and a terminal showing it would act on DEL or a C1
    control (U+009B is a CSI to many). Escaped, they decode to the same strings."""
    try:
        encoded = msgspec.json.encode(value)
    except UnicodeEncodeError:
        encoded = msgspec.json.encode(_unicode_only(msgspec.to_builtins(value)))
    return _RAW_CONTROLS.sub(lambda raw: b"\\u%04x" % ord(raw[0].decode()), encoded).decode()


def _unicode_only(value: Any) -> Any:
    """`value` with each string that is not Unicode (a lone surrogate: a file name's undecodable
    byte, say) showing it as its escape (`\\udcff`): JSON text has no spelling for it that
    every reader takes, and the report is printed whatever it holds."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_unicode_only(item) for item in value]
    if isinstance(value, dict):
        return {_unicode_only(name): _unicode_only(item) for name, item in value.items()}
    return value


def _print_error_report(message: str, *, pinned: bool, offline: bool) -> None:
    from eventstore.verify import Report, Trust

    trust: Trust = "pinned" if pinned else "bundle" if offline else "database"
    report = Report(ok=False, records=0, tenants=[], trust=trust, key_ids=[], error=message)
    click.echo(_json_line(report))


def _print_report(report: Report, as_json: bool) -> None:
    if as_json:
        click.echo(_json_line(report))
    else:
        if report.trust == "pinned":
            click.echo("trusted keys: only those given with --key")
        else:
            click.echo(
                f"trusted keys: those listed by the {report.trust} itself (no --key given); "
                "compare these ids with the published keys:"
            )
            for key_id in report.key_ids:
                click.echo(f"  {key_id}")
        if report.ok:
            click.echo(f"OK: {report.records} records of {len(report.tenants)} tenant(s) verified")
        else:
            assert report.failure is not None  # noqa: S101 - a failed report names its failure
            click.echo(f"FAILED after {report.records} good records: {report.failure.describe()}")
    if not report.ok:
        sys.exit(EXIT_LEDGER_WRONG)


@main.command(cls=_ReportingCommand)
@click.option(
    "--bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify this bundle offline: no database, no network.",
)
@click.option("--tenant", "tenants", multiple=True, help="Database mode: only these tenants.")
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A public key (PEM) to trust; repeatable. Records signed by any other key fail.",
)
@click.option(
    "--from-seq",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Bundle mode: the bundle is a partial export starting at this seq.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Bundle mode: processes checking records (default and most: one per CPU; 1: this"
    " one alone).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@one_line_errors
def verify(
    bundle: Path | None,
    tenants: tuple[str, ...],
    key_files: tuple[Path, ...],
    from_seq: int,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Recompute every hash, link, seq and signature of a bundle or of the database.

    Exit 0 only when everything holds; 1 naming the first failing tenant, seq and reason.
    """
    from eventstore.verify import KeyRing, pin_key, usable_cpus, verify_bundle

    ring = KeyRing()
    for path in key_files:
        pem = path.read_bytes()
        if (blocks := pem.count(b"-----BEGIN ")) > 1:
            # Pinning the first and dropping the rest unsaid would fail their records later,
            # as signed by an untrusted key, for no reason the auditor could see.
            raise CommandError(f"--key {path} holds {blocks} PEM blocks; give one key per --key")
        try:
            pin_key(ring, pem)
        except ValueError as error:
            raise CommandError(f"--key {path}: {error}") from None
    if bundle is not None:
        cpus = usable_cpus()  # more workers than CPUs would only hold more lines in memory
        if tenants:
            raise CommandError("--tenant applies to the database; a bundle has one tenant")
        with bundle.open("rb") as stream, _progress(bundle.stat().st_size, "verifying") as tick:
            report = verify_bundle(
                stream, ring, progress=tick, first_seq=from_seq, jobs=min(jobs or cpus, cpus)
            )
        _print_report(report, as_json)
        return
    if from_seq != 1:
        raise CommandError("--from-seq applies to a bundle; the database holds whole chains")
    if jobs is not None:
        raise CommandError("--jobs applies to a bundle; the database is read by one connection")
    from eventstore.verify import verify_database

    settings = _settings()

    async def check(url: str) -> Report:
        connection = await _owner_connection(url)
        try:
            total = await connection.fetchval(
                "SELECT coalesce(sum(seq), 0) FROM chain_heads"
                " WHERE $1::text[] IS NULL OR tenant = ANY($1)",
                list(tenants) or None,
            )
            with _progress(int(total), "verifying") as tick:
                return await verify_database(connection, ring, list(tenants) or None, progress=tick)
        finally:
            await connection.close()

    with _database(settings) as url:
        report = _run(check(url))
    _print_report(report, as_json)


@main.command()
@click.option("--user", "subject", required=True, help="The person: their user id.")
@click.option("--tenant", help="Only within this customer (default: every customer).")
@click.option("--reason", required=True, help="Why, e.g. the erasure request's reference.")
@one_line_errors
def forget(subject: str, tenant: str | None, reason: str) -> None:
    """Erase a person's personal data by deleting their keys (crypto-shredding).

    Their sealed fields read as erased from then on; the ledger's bytes, hashes and signatures
    are untouched, so every chain still verifies. It cannot be undone.
    """
    from commands.personal_data import PersonalDataVault
    from eventstore.db import create_pool
    from valueledger.bootstrap import prepare_database

    settings = _settings()

    async def erase(url: str) -> int:
        pool = await create_pool(url, settings.db_role or None)
        try:
            return await PersonalDataVault(pool).forget(subject, tenant=tenant, reason=reason)
        finally:
            await pool.close()

    with _database(settings) as url:
        _run(prepare_database(settings, url))
        erased = _run(erase(url))
    where = f"customer {tenant}" if tenant else "every customer"
    if erased:
        click.echo(f"forgot {subject} in {where}: {erased} key(s) erased")
    else:
        click.echo(f"nothing to erase: no keys of {subject} in {where} (already forgotten?)")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--role",
    type=click.Choice(["all", "api", "projectors", "worker"]),
    default="all",
    show_default=True,
    help="Run one part only (production); all of them by default.",
)
@one_line_errors
def serve(host: str, port: int, role: ServeRole) -> None:
    """Run the service: the HTTP API, the projectors and the webhook worker, until SIGINT or
    SIGTERM."""
    from api.staff import create_first_admin
    from valueledger.bootstrap import prepare_database
    from valueledger.serve import event_loop_factory
    from valueledger.serve import serve as run_service
    from valueledger.servers import servers

    settings = _settings()
    with servers(settings) as urls:
        if urls.service_database_url == urls.database_url:
            click.echo(
                "note: the service's sessions log in as DATABASE_URL's role and are only set to "
                f"{settings.db_role or 'it'}; set VALUELEDGER_APP_DATABASE_URL to a login that "
                "owns nothing, so that none can step back to the ledger's owner "
                "(docs/event-store.md, Roles)",
                err=True,
            )
        _run(prepare_database(settings, urls.database_url))
        _run(
            run_service(
                settings,
                urls.database_url,
                urls.redis_url,
                service_url=urls.service_database_url,
                host=host,
                port=port,
                role=role,
                announce=lambda line: click.echo(line, err=True),
                first_admin=lambda services: create_first_admin(services.pool),
            ),
            loop_factory=event_loop_factory(),
        )


@main.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The API's URL.")
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the demo customer's exported ledger (default: a temporary file).",
)
@one_line_errors
def demo(url: str, bundle: Path | None) -> None:
    """Drive a whole onboarding through the API of a running `valueledger serve` (same
    configuration), then export the customer's ledger and verify it offline."""
    import httpx

    from valueledger.demo import run_demo
    from valueledger.settings import redact_url

    settings = _settings()
    with _database(settings) as database_url:
        try:
            _run(run_demo(settings, database_url, url, bundle=bundle, say=click.echo))
        except httpx.TransportError as error:
            raise CommandError(
                f"no valueledger API answers at {redact_url(url)} ({type(error).__name__}); "
                "start it with `valueledger serve`"
            ) from None


@main.command("key-id")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@one_line_errors
def key_id(public_key: Path) -> None:
    """Print the key id of a PEM public (or private) key, to compare with a bundle's."""
    from eventstore.keys import load_private_key
    from eventstore.receipts import key_id_of, load_public_key_pem

    data = public_key.read_bytes()
    if b"PRIVATE KEY" in data:
        click.echo(key_id_of(load_private_key(public_key).public_key()))
        return
    click.echo(key_id_of(load_public_key_pem(data)))
