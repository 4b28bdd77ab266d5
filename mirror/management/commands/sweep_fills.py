from django.conf import settings
from django.core.management.base import BaseCommand

from mirror import leases
from mirror.fill import sweep_spools
from mirror.storage import get_storage


class Command(BaseCommand):
    help = "Remove what crashed fills left: expired leases and abandoned temporary objects."

    def handle(self, *args, **options):
        expired = leases.sweep_expired()
        # Anything older than a lease cannot belong to a live fill (leases are renewed), but
        # an S3 upload's age is its start: uploads of keys with a live lease are kept.
        older_than = settings.MIRROR_FILL_LEASE_SECONDS * 2
        removed = get_storage().sweep(older_than, leases.live_keys()) + sweep_spools(older_than)
        self.stdout.write(f"swept {expired} expired leases, {removed} temporary objects")
