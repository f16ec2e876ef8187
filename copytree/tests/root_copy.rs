//! Root tests, run in the guest.
