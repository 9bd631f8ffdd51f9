from django.core.management.base import BaseCommand, CommandError

from builds.models import Project
from tokens.scopes import PROJECT_KEY_OPTIONAL_SCOPES, PROJECT_KEY_SCOPES
from tokens.services import key_mint_project

CHOICES = sorted(str(s) for s in PROJECT_KEY_SCOPES | PROJECT_KEY_OPTIONAL_SCOPES)


class Command(BaseCommand):
    help = "Mint a project key and print it (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--scope",
            action="append",
            choices=CHOICES,
            help="Repeatable; default builds:create.",
        )
        parser.add_argument("--name", default="")

    def handle(self, *args, slug, scope, name, **options):
        try:
            project = Project.objects.get(slug=slug)
        except Project.DoesNotExist:
            raise CommandError(f"No project {slug!r}.") from None
        scopes = scope or sorted(str(s) for s in PROJECT_KEY_SCOPES)
        key, token = key_mint_project(project=project, scopes=scopes, name=name, actor="cli")
        self.stdout.write(f"Project key {key.pk} ({', '.join(key.scopes)}), shown once:")
        self.stdout.write(token)
