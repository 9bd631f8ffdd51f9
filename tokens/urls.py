from django.urls import path

from . import views

urlpatterns = [
    path("keys/self", views.KeySelfView.as_view(), name="key-self"),
    path("keys/", views.KeyDeriveView.as_view(), name="key-derive"),
    path("keys/<int:key_id>", views.KeyRevokeView.as_view(), name="key-revoke"),
]
