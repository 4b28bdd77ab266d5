from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mirror.config_file import ConfigError, load


class Command(BaseCommand):
    help = (
        "Load upstreams and the always-warm list from MIRROR_CONFIG "
        "(or add Docker Hub when none is configured)."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="defaults to $MIRROR_CONFIG")

    def handle(self, *args, path=None, **options):
        path = path or settings.MIRROR_CONFIG or None
        try:
            loaded = load(Path(path) if path else None)
        except (ConfigError, OSError) as e:
            raise CommandError(str(e)) from None
        for upstream in loaded.upstreams:
            self.stdout.write(f"upstream {upstream.name}: {upstream.kind} {upstream.url}")
        for row in loaded.always_warm:
            platforms = ", ".join(row.platforms) if row.platforms else "all platforms"
            detail = platforms if row.kind == "image" else ""
            state = "" if row.enabled else " (disabled)"
            self.stdout.write(f"always-warm {row.kind}: {row.reference} {detail}".rstrip() + state)
        for warning in loaded.warnings:
            self.stderr.write(f"warning: {warning}")
