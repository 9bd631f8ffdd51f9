"""The admin site: every ModelAdmin registered on it filters only by what its page offers.

Django's changelist accepts any query-string lookup on a model's own fields
(``?digest__startswith=a``), whatever the filters shown: a staff user could then read a secret's
stored material (a token digest, a deploy token's seed, a password hash) one character at a
time. The site mixes ``OfferedLookupsOnly`` into every ModelAdmin it registers, Django's own
(users, groups) and those added later included, so no admin can forget it; and
``EncodableForms``, so a JSON form field shown again with its error never fails to encode.
"""

import json
import re

from django import forms
from django.contrib import admin
from django.contrib.admin.filters import FieldListFilter, ListFilter
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import FieldDoesNotExist
from django.db import models

# A database integer (bigint at most) and a date part, in ASCII digits: anything else is bad
# input Django would pass to int() or the database (OverflowError, "²".isdigit(): a 500).
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_DATE_PART = re.compile(r"[0-9]{1,4}")


class OfferedLookupsOnly:
    """Allow a changelist lookup only if one of the admin's own list filters or its date
    hierarchy produces it, with a value its field can hold; anything else is refused (Django
    answers 400)."""

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        offered = self.offered_lookups(request)
        # ``?action=x`` is the same lookup as the offered ``?action__exact=x``.
        if lookup not in offered and f"{lookup}__exact" not in offered:
            return False
        # A custom filter (SimpleListFilter) reads its own parameter; a field's lookup must fit.
        custom = {
            item.parameter_name
            for item in self.get_list_filter(request)
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter)
        }
        return lookup in custom or self._value_fits(lookup, value)

    def _value_fits(self, lookup: str, value: str) -> bool:
        *path, last = lookup.split("__")
        if last == "isnull":
            return True  # Django reads it as a boolean
        if lookup in self._date_hierarchy_lookups():
            return bool(_DATE_PART.fullmatch(value))
        model, field = self.model, None
        for part in [*path, last]:
            try:
                field = model._meta.get_field(part)
            except FieldDoesNotExist:
                break
            if not field.is_relation:
                break
            model = field.related_model
        if field is not None and field.is_relation:
            field = field.target_field
        if isinstance(field, models.IntegerField | models.AutoField):
            return bool(_INTEGER.fullmatch(value))
        return True

    def offered_lookups(self, request) -> set[str]:
        # Asked once per query parameter; the filters (some query for their choices) are
        # built once per request.
        cache = getattr(request, "_offered_lookups", None) if request is not None else None
        if cache is not None and self.model in cache:
            return cache[self.model]
        offered = self._date_hierarchy_lookups()
        for item in self.get_list_filter(request):
            offered.update(self._filter_parameters(item, request))
        if request is not None:
            request._offered_lookups = {**(cache or {}), self.model: offered}
        return offered

    def _date_hierarchy_lookups(self) -> set[str]:
        if not self.date_hierarchy:
            return set()
        return {f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")}

    def _filter_parameters(self, item, request) -> list[str]:
        # The filters themselves name their parameters (expected_parameters), so a filter
        # class's own spelling (project__id__exact, created_at__gte, ...) is never restated.
        if isinstance(item, type) and issubclass(item, ListFilter):
            return item(request, {}, self.model, self).expected_parameters()
        field_path, filter_class = (
            item if isinstance(item, list | tuple) else (item, FieldListFilter.create)
        )
        field = get_fields_from_path(self.model, field_path)[-1]
        spec = filter_class(field, request, {}, self.model, self, field_path=field_path)
        return spec.expected_parameters()


class EncodableJSONFormField(forms.JSONField):
    """The admin's JSON textarea, which always encodes: a refused value is shown again with
    its error, and a lone surrogate in it (``"\\ud800"``) is shown as the escape it was typed
    as, not as a character no response can hold."""

    def prepare_value(self, value):
        text = super().prepare_value(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value, cls=self.encoder)  # ASCII, with \u escapes
        return text


class EncodableForms:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Unless the admin chose a form field for JSON itself.
        self.formfield_overrides.setdefault(models.JSONField, {}).setdefault(
            "form_class", EncodableJSONFormField
        )


class AdminSite(admin.AdminSite):
    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, OfferedLookupsOnly):
            admin_class = type(
                admin_class.__name__,
                (OfferedLookupsOnly, EncodableForms, admin_class),
                {"__module__": admin_class.__module__, "__qualname__": admin_class.__qualname__},
            )
        return super().register(model_or_iterable, admin_class, **options)
