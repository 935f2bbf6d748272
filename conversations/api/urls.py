from django.urls import path

from . import views

urlpatterns = [
    path("conversations/", views.ConversationList.as_view(), name="api-conversations"),
    path(
        "conversations/<int:pk>/",
        views.ConversationDetail.as_view(),
        name="api-conversation",
    ),
    path(
        "conversations/<int:pk>/messages/",
        views.ConversationMessages.as_view(),
        name="api-conversation-messages",
    ),
    path("messages/<int:pk>/", views.MessageDetail.as_view(), name="api-message"),
    path("customers/", views.CustomerList.as_view(), name="api-customers"),
    path("customers/<int:pk>/", views.CustomerDetail.as_view(), name="api-customer"),
]
