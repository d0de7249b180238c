"""Onboarding acceptance (验收): prove a kindergarten's installation end to end, keep the report."""
