from django.apps import AppConfig
from django.core.checks import Tags, register
from django.db.models.signals import post_migrate


class MirrorConfig(AppConfig):
    name = "mirror"
    verbose_name = "Mirror core"

    def ready(self) -> None:
        from .checks import check_connection_limit
        from .schedules import ensure_defaults

        # A database check: run by `migrate` and `check --database`, not by every command.
        register(check_connection_limit, Tags.database)
        # The default beat schedules, created once after migrate (never overwritten).
        post_migrate.connect(ensure_defaults, sender=self, dispatch_uid="mirror.schedules")
