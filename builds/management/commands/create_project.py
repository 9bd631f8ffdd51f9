from django.core.management.base import BaseCommand, CommandError

from builds.models import Project
from builds.services import project_create
from tokens.services import key_mint_project


class Command(BaseCommand):
    help = "Create a project and print its first project key (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--deploy-tokens", action="store_true", help="Opt in to a read-only deploy token."
        )

    def handle(self, *args, slug, name, deploy_tokens, **options):
        if Project.objects.filter(slug=slug).exists():
            raise CommandError(f"Project {slug!r} already exists (use mint_project_key).")
        project = project_create(slug=slug, name=name, deploy_tokens=deploy_tokens)
        key, token = key_mint_project(project=project, name="created with project", actor="cli")
        self.stdout.write(f"Created project {project.slug}.")
        self.stdout.write(f"Project key {key.pk} ({', '.join(key.scopes)}), shown once:")
        self.stdout.write(token)
