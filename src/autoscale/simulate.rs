//! The policy simulator: replays a CSV metric trace through the same decision code as the live
//! controller ([`super::policy::evaluate`]) and prints the capacity timeline.
