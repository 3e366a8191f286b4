//! Named providers with a default (one per backend an agent drives).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::Provider;

/// Why a provider lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Nothing is registered under this name.
    #[error("provider {0:?} is not registered")]
    NotFound(String),
    /// No default was set and more than one provider is registered (or none).
    #[error("no default provider is set (registered: {0})")]
    NoDefault(String),
}

/// A thread-safe map of name → provider with a default.
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    default: Option<String>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `provider` under `name`, replacing an earlier one. The
    /// first provider registered becomes the default until one is set.
    pub fn register(&self, name: impl Into<String>, provider: Arc<dyn Provider>) {
        let name = name.into();
        let mut inner = self.write();
        if inner.default.is_none() {
            inner.default = Some(name.clone());
        }
        inner.providers.insert(name, provider);
    }

    /// The provider named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>, RegistryError> {
        self.read()
            .providers
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
    }

    /// Makes `name` the default; it must be registered.
    pub fn set_default(&self, name: &str) -> Result<(), RegistryError> {
        let mut inner = self.write();
        if !inner.providers.contains_key(name) {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        inner.default = Some(name.to_owned());
        Ok(())
    }

    /// The default provider.
    pub fn default_provider(&self) -> Result<Arc<dyn Provider>, RegistryError> {
        let inner = self.read();
        inner
            .default
            .as_ref()
            .and_then(|name| inner.providers.get(name).cloned())
            .ok_or_else(|| RegistryError::NoDefault(names(&inner)))
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().providers.keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn names(inner: &Inner) -> String {
    if inner.providers.is_empty() {
        "none".into()
    } else {
        inner
            .providers
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}
