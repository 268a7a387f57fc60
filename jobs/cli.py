"""`coder-jobs` command line: global flags, one subcommand per job, exit codes 0/1/2.

Job modules are imported only when their subcommand runs, so jobs that never talk to
Kubernetes never import the `kubernetes` package (start-up time in a CronJob matters).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import typing
from collections.abc import Sequence
from typing import Any, NamedTuple

from jobs import __version__
from jobs import settings as settings_mod
from jobs.context import RunContext
from jobs.errors import EXIT_BAD_INPUT, EXIT_NOT_CONVERGED, ConfigError, JobError, Terminated
from jobs.log import configure, flush, get_logger, register_public_keys, register_secrets
from jobs.settings import JobSettings


class Job(NamedTuple):
    module: str  # imported only when the job runs
    settings: type[JobSettings]  # its fields are the variables the job reads (and its flags)
    help: str


# The one table of jobs: the CLI's subcommands, and through the settings classes `--help`, the
# chart's env (chart/files/job-env.json) and README's settings table (tests/test_job_env.py).
JOBS: dict[str, Job] = {
    "sync-external-auth": Job("jobs.sync_external_auth", settings_mod.ExternalAuthSettings,
                              "Materialize coderd's GitHub external-auth Secret from the two source Secrets"),
    "bootstrap-admin": Job("jobs.bootstrap_admin", settings_mod.BootstrapSettings, "Create Coder's first (admin) user"),
    "republish-templates": Job("jobs.republish", settings_mod.TemplatesSettings,
                               "Publish the Coder templates when their content or settings changed"),
    "recover": Job("jobs.recover", settings_mod.RecoverSettings,
                   "Heal a database reset: bootstrap-admin, then republish-templates"),
    "doctor": Job("jobs.doctor", settings_mod.DoctorSettings,
                  "Read-only drift report; exit 0 healthy, 1 drift, 3 could not check (coderd unreachable or failing)"),
    "reap": Job("jobs.reap", settings_mod.ReapSettings,
                "Stop idle workspaces, check per-user quotas, find orphaned workspace pods"),
}

# Jobs that never write: no --dry-run to offer.
READ_ONLY_JOBS = {"doctor"}

SECRET_ENV = ("CODER_ADMIN_PASSWORD", "CODER_SESSION_TOKEN", "CODER_SETUP_TOKEN")


def _global_flags(defaults: bool, dry_run: bool = True) -> argparse.ArgumentParser:
    # Accepted both before and after the subcommand; SUPPRESS keeps the later one from
    # overwriting the earlier with its default.
    p = argparse.ArgumentParser(add_help=False)
    default = None if defaults else argparse.SUPPRESS
    if dry_run:
        p.add_argument("--dry-run", action="store_true", default=False if defaults else argparse.SUPPRESS,
                       help="plan and print, write nothing")
    p.add_argument("--log-format", choices=["json", "console"], default=default,
                   help="json (default when stdout is not a terminal) or console")
    return p


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _settings_flags(parser: argparse.ArgumentParser, cls: type[JobSettings]) -> None:
    """One flag per non-secret setting: --coder-url overrides CODER_URL."""
    group = parser.add_argument_group("settings (flags override environment variables)")
    secrets = cls.secret_fields()
    for name, info in cls.model_fields.items():
        if name in secrets:
            continue  # secrets only from the environment: flags show up in `ps`
        if info.is_required():
            when = " (required)"
        elif info.default in (None, ()):
            when = ""  # the description says what unset means
        else:
            when = f" (default: {_default_text(info.default)})"
        flags = [f"--{name.replace('_', '-')}"]
        extra = info.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get("flag"), str):
            flags.append(str(extra["flag"]))  # a shorter spelling the chart and RUNBOOK use
        help_text = f"{info.description or ''} [env {settings_mod.env_name(name)}]"
        if info.annotation is bool:  # a switch: the flag turns it on, the variable can too
            group.add_argument(*flags, dest=f"setting_{name}", action="store_const", const=True, default=None,
                               help=help_text)
            continue
        choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
        group.add_argument(*flags, dest=f"setting_{name}", default=None,
                           metavar="|".join(choices) if choices else "VALUE", help=f"{help_text}{when}")


def _secrets_epilog(cls: type[JobSettings]) -> str:
    lines = []
    for name in cls.secret_fields():
        info = cls.model_fields[name]
        lines.append(f"  {name.upper():<22} {info.description or ''}{' (required)' if info.is_required() else ''}")
    if not lines:
        return ""
    return ("secrets (environment variables only, never flags: a flag's value shows in `ps`):\n" + "\n".join(lines)
            + "\n\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coder-jobs",
        description="Lifecycle and recovery jobs for a self-hosted Coder deployment.",
        epilog="Settings come from environment variables (a flag per non-secret setting overrides its variable); "
               f"secrets only from the environment ({', '.join(SECRET_ENV)}). `coder-jobs JOB --help` lists a job's. "
               "Exit codes: 0 converged (a no-op counts), 1 could not converge, 2 invalid configuration or input; "
               "doctor also 3: could not check.",
        parents=[_global_flags(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"coder-jobs {__version__}")
    sub = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, (_module, cls, help_text) in JOBS.items():
        codes = ("Exit codes: 0 healthy, 1 drift found, 2 invalid configuration or input, 3 could not check "
                 "(coderd unreachable, or failing past CODER_READY_TIMEOUT)." if name == "doctor" else
                 "Exit codes: 0 converged (a no-op counts), 1 could not converge, 2 invalid configuration or input.")
        job_flags = _global_flags(defaults=False, dry_run=name not in READ_ONLY_JOBS)
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[job_flags],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=_secrets_epilog(cls) + codes)
        _settings_flags(p, cls)
    return parser


def _url_passwords(*urls: str | None) -> list[str]:
    """Userinfo of a URL given as CODER_URL: settings refuse such a URL (exit 2) without echoing it,
    and this keeps the password out of any line logged before that."""
    out = []
    for url in urls:
        if url and "@" in url:
            userinfo = url.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[0]
            out += [userinfo, userinfo.partition(":")[2]]
    return out


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("terminated by SIGTERM (activeDeadlineSeconds or eviction); the next run converges")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.log_format or os.environ.get("CODER_JOBS_LOG_FORMAT") or None, job=args.job)
    log = get_logger()
    register_secrets(os.environ.get(name) for name in SECRET_ENV)
    register_secrets(_url_passwords(os.environ.get("CODER_URL"), getattr(args, "setting_coder_url", None)))
    signal.signal(signal.SIGTERM, _on_sigterm)
    job = JOBS[args.job]
    try:
        overrides = {k.removeprefix("setting_"): v for k, v in vars(args).items() if k.startswith("setting_")}
        settings = settings_mod.load(job.settings, overrides)
        register_secrets(settings.secret_values())
        public = settings.public_values()
        register_public_keys(public)  # secret *names* are names: shown, so the next line is not a riddle
        ctx = RunContext(dry_run=args.dry_run, log=log)
        log.info("settings", dry_run=args.dry_run, **public)
        module = importlib.import_module(job.module)
        return int(module.run(settings, ctx))
    except ConfigError as exc:
        log.error(str(exc), exit_code=EXIT_BAD_INPUT, problems=exc.problems or None)
        return EXIT_BAD_INPUT
    except JobError as exc:
        log.error(str(exc), exit_code=exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted", exit_code=EXIT_NOT_CONVERGED)
        return EXIT_NOT_CONVERGED
    except Exception as exc:  # a bug: report it (redacted), never a raw traceback
        log.exception(f"unexpected error: {type(exc).__name__}", exit_code=EXIT_NOT_CONVERGED)
        return EXIT_NOT_CONVERGED
    finally:
        flush()
        sys.stdout.flush()
