from django.urls import path

from . import business, consents, reports, views

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
    # --- Business: consent and notifications ---
    path("consents/", consents.ConsentCreate.as_view(), name="api-consents"),
    path(
        "customers/<int:pk>/consents/",
        consents.CustomerConsents.as_view(),
        name="api-customer-consents",
    ),
    path(
        "notifications/",
        business.NotificationCreate.as_view(),
        name="api-notifications",
    ),
    path(
        "notifications/<int:pk>/",
        business.NotificationDetail.as_view(),
        name="api-notification",
    ),
    path("media/", business.MediaUpload.as_view(), name="api-media"),
    # --- Reports: CSV files for a token with conversations.view_reports ---
    path("reports/<slug:name>.csv", reports.ReportCSV.as_view(), name="api-report-csv"),
]
