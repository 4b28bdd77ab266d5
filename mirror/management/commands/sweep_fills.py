from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from mirror.fill import sweep_spools
from mirror.models import FillLease
from mirror.storage import get_storage


class Command(BaseCommand):
    help = "Remove what crashed fills left: expired leases and abandoned temporary objects."

    def handle(self, *args, **options):
        leases = FillLease.objects.filter(expires_at__lt=timezone.now()).delete()[0]
        # Anything older than a lease cannot belong to a live fill (leases are renewed).
        older_than = settings.MIRROR_FILL_LEASE_SECONDS * 2
        removed = get_storage().sweep(older_than) + sweep_spools(older_than)
        self.stdout.write(f"swept {leases} expired leases, {removed} temporary objects")
