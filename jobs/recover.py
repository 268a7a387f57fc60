"""recover: the one command that heals a database reset — wait for coderd, create the
first user if it is gone, then republish the templates. One client, one session."""

from __future__ import annotations

from jobs import bootstrap_admin, republish
from jobs.coder import client_from_settings
from jobs.context import RunContext
from jobs.errors import EXIT_OK
from jobs.log import summary
from jobs.plan import Plan, log_plan
from jobs.settings import RecoverSettings
from jobs.template_source import load_templates


def run(settings: RecoverSettings, ctx: RunContext) -> int:
    templates = load_templates(settings.templates_dir, settings.template_names())  # bad input fails first
    with client_from_settings(settings) as client:
        client.wait_ready()
        admin = bootstrap_admin.converge(client, settings, ctx)
        creates = bool(admin.of_type(bootstrap_admin.CreateFirstUser))
        templates_plan: Plan[republish.RepublishAction] = Plan()
        if ctx.dry_run and creates:
            # Nobody to log in as yet, so nothing to read: every template would be created.
            for t in templates:
                templates_plan += republish.plan(t, republish.RemoteTemplate(None))
            log_plan(ctx.log, templates_plan, dry_run=True)
        else:
            written = f"the first user {settings.coder_admin_username} was created" if creates and not ctx.dry_run else None
            templates_plan = republish.converge(client, settings, ctx, templates, written=written)
        actions = admin + templates_plan
    summary(ctx.log, checked=len(actions), changed=actions.writes, dry_run=ctx.dry_run,
            templates=[t.name for t in templates])
    return EXIT_OK
