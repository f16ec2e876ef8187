//! tosskey-dm: a safe, key-hygienic API over the device-mapper control device.
