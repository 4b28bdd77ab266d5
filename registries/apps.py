from django.apps import AppConfig


class RegistriesConfig(AppConfig):
    name = "registries"
    verbose_name = "Container images"

    def ready(self) -> None:
        from mirror import ecosystems

        from .warm import ImageEcosystem

        ecosystems.register(ImageEcosystem())
