from django.apps import AppConfig
from django.core.checks import Tags, register


class MirrorConfig(AppConfig):
    name = "mirror"
    verbose_name = "Mirror core"

    def ready(self) -> None:
        from .checks import check_connection_limit

        # A database check: run by `migrate` and `check --database`, not by every command.
        register(check_connection_limit, Tags.database)
