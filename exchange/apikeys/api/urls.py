from django.urls import path

from exchange.apikeys.api import views

urlpatterns = [
    path("api-keys", views.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api-keys/<str:key_id>", views.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
]
