from django.db import models  # noqa: F401  (Subscription, Delivery: the webhooks issue)
