"""``strongroom verify``."""

from __future__ import annotations

import typer

from strongroom.cli import context, output
from strongroom.errors import CatalogIntegrityError, IntegrityError, UsageError


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)


def verify(
    ctx: typer.Context,
    recovery_point: str | None = typer.Option(None, "--recovery-point", help="ARN; default: every one."),
    read_data: bool = typer.Option(False, "--read-data", help="Decrypt and re-hash every chunk."),
    json_output: bool = typer.Option(False, "--json"),
    trust_catalog: bool = typer.Option(
        False,
        "--trust-catalog",
        help="First vouch for the catalog as it is now: sign its records with the account key and rewrite the "
        "vaults' records from it. Only after reading the findings, for a catalog you put back on purpose.",
    ),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="On S3 vaults with Object Lock: put hidden objects' locked versions back on top (remove delete "
        "markers, cover unlocked or forged newer versions).",
    ),
) -> None:
    """Check that recovery points are whole and that the catalog agrees with the vaults; with --read-data,
    that every byte is intact."""
    from strongroom.services.catalog_integrity import trust_catalog_as_is
    from strongroom.services.verify import verify as run_verify

    with context.account(ctx) as account, output.progress_bar("Verifying", None, not json_output) as progress:
        if trust_catalog:
            if recovery_point:
                raise UsageError("--trust-catalog applies to the whole catalog: leave out --recovery-point")
            trust_catalog_as_is(account)
        report = run_verify(account, recovery_point, read_data=read_data, progress=progress, repair=repair)
    if json_output:
        output.emit_json(report.as_dict())
    else:
        for key, problem in sorted(report.damaged_objects.items()):
            output.console.print(f"[red]damaged[/] {key}: {problem}", highlight=False)
        for arn, keys in sorted(report.damaged_recovery_points.items()):
            output.console.print(f"[red]affected[/] {arn} ({len(keys)} damaged objects)", highlight=False)
        for key, problem in sorted(report.hidden_objects.items()):
            output.console.print(f"[red]hidden[/] {key}: {problem}", highlight=False)
        for key in report.repaired_objects:
            output.console.print(f"[green]repaired[/] {key}", highlight=False)
        for finding in report.catalog_findings:
            output.console.print(f"[red]catalog[/] {finding}", highlight=False, soft_wrap=True)
        mode = "read and re-hashed" if read_data else "checked present"
        output.console.print(
            f"{report.recovery_points_checked} recovery points, {report.objects_checked} objects {mode}, "
            f"{len(report.damaged_objects)} damaged"
        )
    if report.catalog_findings:
        raise CatalogIntegrityError(
            f"the catalog disagrees with its vaults ({len(report.catalog_findings)} findings above)",
            hint="Nothing relies on the catalog until it is fixed: restore catalog.db from a copy you trust "
            "(docs/operations.md, 'Catalog integrity')",
        )
    if report.hidden_objects and not report.damaged_objects:
        raise IntegrityError(
            f"{len(report.hidden_objects)} objects are hidden on the storage (their locked versions are intact)",
            hint="Run 'strongroom verify --repair' to put them back on top; restores read them meanwhile",
        )
    if not report.ok:
        raise IntegrityError(
            f"{len(report.damaged_objects)} damaged objects affect {len(report.damaged_recovery_points)} "
            "recovery points",
            hint="Restore from another recovery point or from the destination vault's copy",
        )
