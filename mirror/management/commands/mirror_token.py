from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from mirror import tokens
from mirror.models import ApiToken


class Command(BaseCommand):
    help = (
        "Manage REST API tokens. `create NAME [--scope read|prewarm|admin ...]` prints the new "
        "token on its last line (it is stored hashed and never shown again); `list`; "
        "`revoke NAME`."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("name")
        create.add_argument(
            "--scope",
            action="append",
            choices=tokens.SCOPES,
            help="repeatable; default: read",
        )
        sub.add_parser("list")
        revoke = sub.add_parser("revoke")
        revoke.add_argument("name")

    def handle(self, *args, action, **options):
        if action == "create":
            try:
                row, token = tokens.create(options["name"], options["scope"] or ["read"])
            except IntegrityError:
                raise CommandError(f"a token named {options['name']!r} exists") from None
            self.stderr.write(f"token {row.name} with scopes {', '.join(row.scopes)}:")
            self.stdout.write(token)
        elif action == "list":
            for row in ApiToken.objects.order_by("name"):
                state = "revoked" if row.revoked else f"last used {row.last_used or 'never'}"
                self.stdout.write(f"{row.name}\t{row.prefix}…\t{','.join(row.scopes)}\t{state}")
        else:
            if not ApiToken.objects.filter(name=options["name"]).update(revoked=True):
                raise CommandError(f"no token named {options['name']!r}")
            self.stdout.write(f"revoked {options['name']}")
