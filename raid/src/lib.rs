//! tosskey-raid: non-persistent md arrays assembled with raw md ioctls.
