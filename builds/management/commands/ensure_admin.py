import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the admin user if no superuser exists yet, and say how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("ADMIN_USERNAME", "admin"))
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/")

    def handle(self, *args, username, url, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(f"Admin: log in at {url} with your existing superuser.")
            return
        given = os.environ.get("ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if given:
            self.stdout.write(f"Admin: log in at {url} as {username!r} with ADMIN_PASSWORD.")
        elif self.stdout.isatty():
            self.stdout.write(
                f"Admin: log in at {url} as {username!r} with password {password!r} "
                "(shown once; change it in the admin)."
            )
        else:
            # Output that is not a terminal usually ends up in a log file (CI, systemd, a
            # redirect): the password goes to a file only this user can read instead.
            path = Path(settings.DATA_DIR) / "admin-password"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # also if an older file was there
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            self.stdout.write(
                f"Admin: log in at {url} as {username!r} with the password in {path} "
                "(readable by you only; delete it once you have changed the password)."
            )
