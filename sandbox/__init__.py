"""Local emulators of the Salesforce, HubSpot, ChiliPiper and Amplitude APIs, with faults."""
