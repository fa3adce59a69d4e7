//! weir guest SDK
