from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from mirror import eviction


class Command(BaseCommand):
    help = (
        "Run one eviction pass now: while an upstream (Upstream.max_bytes) or the whole cache "
        "(MIRROR_CACHE_MAX_BYTES) is over its budget, evict the least recently pulled content. "
        "Prints what it evicted."
    )

    def handle(self, *args, **options):
        try:
            freed = eviction.run()
        except eviction.Busy as e:
            raise CommandError(str(e)) from None
        for each in freed:
            row = each.eviction
            self.stdout.write(
                f"evicted {row.kind} {row.reference} ({row.reason}): "
                f"{row.object_count} objects, {filesizeformat(row.bytes)}"
            )
        used = eviction.usage()
        self.stdout.write(
            f"{len(freed)} evicted; the cache now holds {used.total} bytes "
            f"({filesizeformat(used.total)})"
        )
