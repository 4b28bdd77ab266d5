from django.apps import AppConfig
from django.core import checks


class GoproxyConfig(AppConfig):
    name = "goproxy"
    verbose_name = "Go modules"

    def ready(self) -> None:
        from mirror import ecosystems

        from .checks import check_go_upstreams
        from .prewarm import ModuleEcosystem

        checks.register(check_go_upstreams)
        ecosystems.register(ModuleEcosystem())
