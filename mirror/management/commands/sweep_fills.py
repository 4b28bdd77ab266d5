from django.core.management.base import BaseCommand

from mirror.sweep import sweep


class Command(BaseCommand):
    help = "Remove what crashed fills left: expired leases and abandoned temporary objects."

    def handle(self, *args, **options):
        swept = sweep()
        self.stdout.write(
            f"swept {swept.leases} expired leases, {swept.temporary} temporary objects"
        )
