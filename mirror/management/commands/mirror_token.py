import datetime as dt

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError
from django.utils import timezone

from mirror import tokens
from mirror.models import ApiToken, PullToken


class Command(BaseCommand):
    help = (
        "Manage REST API tokens. `create NAME [--scope read|prewarm|admin ...]` prints the new "
        "token on its last line (it is stored hashed and never shown again); `list`; "
        "`revoke NAME`. Users' pull tokens: `pull-create USER NAME [--days N]` prints the new "
        "token on its last line, likewise; `pull-revoke USER NAME`."
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
        pull_create = sub.add_parser("pull-create")
        pull_create.add_argument("user")
        pull_create.add_argument("name")
        pull_create.add_argument("--days", type=int, help="expires after N days (default: never)")
        pull_revoke = sub.add_parser("pull-revoke")
        pull_revoke.add_argument("user")
        pull_revoke.add_argument("name")

    def handle(self, *args, action, **options):
        if action == "create":
            try:
                row, token = tokens.create(options["name"], options["scope"] or ["read"])
            except IntegrityError:
                raise CommandError(f"a token named {options['name']!r} exists") from None
            self.stderr.write(f"token {row.name} with scopes {', '.join(row.scopes)}:")
            self.stdout.write(token)
        elif action == "pull-create":
            self._pull_create(options["user"], options["name"], options["days"])
        elif action == "pull-revoke":
            rows = PullToken.objects.filter(user__username=options["user"], name=options["name"])
            if not rows.update(revoked=True):
                raise CommandError(f"{options['user']} has no pull token {options['name']!r}")
            self.stdout.write(f"revoked {options['user']} / {options['name']}")
        elif action == "list":
            for row in ApiToken.objects.order_by("name"):
                state = "revoked" if row.revoked else f"last used {row.last_used or 'never'}"
                self.stdout.write(f"{row.name}\t{row.prefix}…\t{','.join(row.scopes)}\t{state}")
        else:
            if not ApiToken.objects.filter(name=options["name"]).update(revoked=True):
                raise CommandError(f"no token named {options['name']!r}")
            self.stdout.write(f"revoked {options['name']}")

    def _pull_create(self, username: str, name: str, days: int | None) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r} (create it in the admin)")
        expires = timezone.now() + dt.timedelta(days=days) if days else None
        try:
            row, token = tokens.create_pull_token(user, name, expires)
        except IntegrityError:
            raise CommandError(f"{username} has a pull token named {name!r}") from None
        until = f", expires {row.expires:%Y-%m-%d %H:%M} UTC" if row.expires else ""
        self.stderr.write(f"pull token {row.name} of {username}{until}:")
        self.stdout.write(token)
