"""What every process shares: settings, the way to reach Temporal, a clean exit."""
