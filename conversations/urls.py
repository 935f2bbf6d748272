from django.urls import include, path

from . import views
from .api import views as api_views

app_name = "conversations"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("api/v1/", include("conversations.api.urls")),
    # Customer media, only through this authenticated view (session or token).
    path("media/<int:pk>/", api_views.MessageMedia.as_view(), name="message-media"),
]
