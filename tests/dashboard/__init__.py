"""The admin dashboard: views through the test client, and the real thing in Chromium."""
