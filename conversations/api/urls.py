from django.urls import path

from . import (
    business,
    business_hours,
    consents,
    reports,
    routing,
    service_levels,
    views,
)

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
    # --- Routing: auto-assignment settings, business hours, service levels ---
    path(
        "service-policies/",
        service_levels.ServicePolicyList.as_view(),
        name="api-service-policies",
    ),
    path(
        "service-policies/<int:pk>/",
        service_levels.ServicePolicyDetail.as_view(),
        name="api-service-policy",
    ),
    path(
        "conversations/<int:pk>/service-level/",
        service_levels.ConversationServiceLevel.as_view(),
        name="api-conversation-service-level",
    ),
    path(
        "teams/<int:pk>/satisfaction-survey/",
        service_levels.TeamSatisfactionSurvey.as_view(),
        name="api-team-satisfaction-survey",
    ),
    path(
        "conversations/<int:pk>/satisfaction/",
        service_levels.ConversationSatisfaction.as_view(),
        name="api-conversation-satisfaction",
    ),
    path(
        "conversations/<int:pk>/macros/",
        service_levels.ConversationMacros.as_view(),
        name="api-conversation-macros",
    ),
    path(
        "reports/service-levels/",
        service_levels.ServiceLevelReport.as_view(),
        name="api-report-service-levels",
    ),
    path(
        "business-hours/",
        business_hours.BusinessHoursList.as_view(),
        name="api-business-hours",
    ),
    path(
        "business-hours/<int:pk>/",
        business_hours.BusinessHoursDetail.as_view(),
        name="api-business-hours-detail",
    ),
    path(
        "teams/<int:pk>/routing/",
        routing.TeamRoutingDetail.as_view(),
        name="api-team-routing",
    ),
    path(
        "agents/<int:pk>/routing/",
        routing.AgentRoutingDetail.as_view(),
        name="api-agent-routing",
    ),
    # --- Reports: CSV files for a token with conversations.view_reports ---
    path("reports/<slug:name>.csv", reports.ReportCSV.as_view(), name="api-report-csv"),
]
