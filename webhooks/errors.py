from rest_framework import exceptions


class InvalidSubscription(exceptions.ValidationError):
    """Bad subscription input: 400 with the field that is wrong and a specific code."""
