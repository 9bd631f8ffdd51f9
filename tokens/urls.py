from django.urls import path

from . import views

urlpatterns = [
    path("keys/self", views.KeySelfView.as_view(), name="key-self"),
]
