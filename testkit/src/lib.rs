//! tosskey-testkit: fixtures for root tests that run inside the VM guest.
