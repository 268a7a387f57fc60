"""recover: the one command that heals a database reset — wait for coderd, create the
first user if it is gone, then republish the templates. One client, one session."""

from __future__ import annotations

from jobs import bootstrap_admin, republish
from jobs.coder import client_from_settings
from jobs.context import RunContext
from jobs.errors import EXIT_OK
from jobs.plan import Plan, log_plan
from jobs.settings import RecoverSettings
from jobs.template_source import load_templates


def run(settings: RecoverSettings, ctx: RunContext) -> int:
    templates = load_templates(settings.templates_dir, settings.template_names())  # bad input fails first
    with client_from_settings(settings) as client:
        client.wait_ready()
        first_user = bootstrap_admin.converge(client, settings, ctx)
        if ctx.dry_run and first_user.of_kind("create-first-user"):
            # Nobody to log in as yet, so nothing to read: every template would be created.
            log_plan(ctx.log, sum((republish.plan(t, republish.RemoteTemplate(None)) for t in templates), Plan()), dry_run=True)
            return EXIT_OK
        republish.converge(client, settings, ctx, templates)
    ctx.log.info("recovered", templates=[t.name for t in templates])
    return EXIT_OK
