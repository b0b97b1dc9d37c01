//! Typed settings, parsed once and layered (defaults < file < config centre < `SHIPPY_` env), and
//! how live changes reach the components that can apply them.
//!
//! - [`common`]: the sections every process shares; [`services`]: each service's settings type;
//!   [`gateway`]: the REST gateway's.
//! - [`layers`]: builds a settings value from its layers and names the key of a bad value.
//! - [`live`]: settings as a watch channel; components subscribe to their part.

pub mod common;
pub mod gateway;
pub mod layers;
pub mod live;
pub mod services;

use std::fmt;

use serde::{Serialize, de::DeserializeOwned};

pub use common::*;
pub use layers::{
    ENV_PREFIX, Layered, SettingsError, UnknownKey, layered, layered_checked, layered_with_env,
};
pub use live::Live;

/// A service's complete settings: the shared part plus its own sections.
pub trait ServiceSettings:
    DeserializeOwned + Serialize + Default + Clone + PartialEq + Send + Sync + fmt::Debug + 'static
{
    /// The shared part.
    fn common(&self) -> &CommonSettings;
    /// Changed settings that only take effect after a restart (the service's own sections
    /// included); by default the shared ones.
    fn restart_needed(&self, new: &Self) -> Vec<&'static str> {
        self.common().restart_needed(new.common())
    }
}
