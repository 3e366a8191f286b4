//! Creating a workload's objects: its network, images and containers.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, UploadToContainerOptions,
};
use futures::StreamExt;

use super::labels;
use super::{DockerProvider, is_not_found, status_code};
use crate::Error;
use crate::spec::{Persistence, RestartPolicy, Role, ServiceSpec, WorkloadKind, WorkloadSpec};

impl DockerProvider {
    /// Creates the workload's network unless it exists.
    pub(super) async fn ensure_network(&self, spec: &WorkloadSpec) -> Result<(), Error> {
        let name = labels::network_name(&spec.id);
        let found = self
            .call_raw(
                "inspect network",
                self.docker.inspect_network(
                    &name,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                ),
            )
            .await?;
        match found {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::backend(format!("inspect network {name}"), e)),
        }
        let mut net_labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        net_labels.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        net_labels.insert(labels::WORKLOAD.into(), spec.id.clone());
        let created = self
            .call_raw(
                "create network",
                self.docker.create_network(NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(net_labels),
                    ..Default::default()
                }),
            )
            .await?;
        match created {
            Ok(_) => Ok(()),
            // Created concurrently by someone else: fine.
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(Error::backend(format!("create network {name}"), e)),
        }
    }

    /// Creates a labelled named volume unless it exists (labels let
    /// deprovision find it; podman ignores labels on implicit volumes).
    async fn ensure_volume(&self, workload: &str, name: &str) -> Result<(), Error> {
        let created = self
            .call_raw(
                "create volume",
                self.docker
                    .create_volume(bollard::models::VolumeCreateRequest {
                        name: Some(name.to_owned()),
                        labels: Some(HashMap::from([
                            (
                                labels::MANAGED_BY.to_owned(),
                                labels::MANAGED_BY_VALUE.to_owned(),
                            ),
                            (labels::WORKLOAD.to_owned(), workload.to_owned()),
                        ])),
                        ..Default::default()
                    }),
            )
            .await?;
        match created {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(Error::backend(format!("create volume {name}"), e)),
        }
    }

    /// Makes sure `image` is present, pulling it when it is not.
    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), Error> {
        match self
            .call_raw("inspect image", self.docker.inspect_image(image))
            .await?
        {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::backend(format!("inspect image {image}"), e)),
        }
        let pull = async {
            let mut progress = self.docker.create_image(
                Some(CreateImageOptions {
                    from_image: Some(image.to_owned()),
                    ..Default::default()
                }),
                None,
                None,
            );
            while let Some(step) = progress.next().await {
                step?;
            }
            Ok::<_, bollard::errors::Error>(())
        };
        self.call_raw("pull image", pull).await?.map_err(|e| {
            let what = if is_not_found(&e) || e.to_string().contains("not found") {
                format!("image {image} not found")
            } else {
                format!("image {image} is not present and pulling it failed")
            };
            Error::backend(what, e)
        })
    }

    /// What the service runs, as the engine would decide it: its command
    /// (and args), or the image's entrypoint with the service's args or else
    /// the image's command.
    async fn command_line(&self, service: &ServiceSpec) -> Result<Vec<String>, Error> {
        if !service.command.is_empty() {
            return Ok(service
                .command
                .iter()
                .chain(&service.args)
                .cloned()
                .collect());
        }
        let image = self
            .call(
                &format!("inspect image {}", service.image),
                self.docker.inspect_image(&service.image),
            )
            .await?;
        let config = image.config.unwrap_or_default();
        let mut argv = config.entrypoint.unwrap_or_default();
        if service.args.is_empty() {
            argv.extend(config.cmd.unwrap_or_default());
        } else {
            argv.extend(service.args.iter().cloned());
        }
        if argv.is_empty() {
            return Err(Error::InvalidSpec(format!(
                "service {:?}: image {} has no entrypoint or command, and the service sets none",
                service.name, service.image
            )));
        }
        Ok(argv)
    }

    /// Creates (not starts) the container of service `index` in `replica`
    /// at `revision`, with its config files in place.
    pub(super) async fn create_container(
        &self,
        spec: &WorkloadSpec,
        index: usize,
        replica: u32,
        revision: u64,
        releases: &str,
    ) -> Result<String, Error> {
        let service = &spec.services[index];
        let name = labels::container_name(&spec.id, &service.name, replica, revision);
        self.ensure_image(&service.image).await?;

        // Secret values never go into the container's config (see
        // `secrets`): ctrl-init reads them from a tmpfs at start.
        let env: Vec<String> = service
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut secret_values = Vec::with_capacity(service.secrets.len());
        for secret in &service.secrets {
            let value =
                crate::provider::resolve_secret(self.secrets.as_ref(), &service.name, secret)
                    .await?;
            secret_values.push((secret.env.clone(), value));
        }
        let (entrypoint, cmd, secret_mounts) = if secret_values.is_empty() {
            (
                (!service.command.is_empty()).then(|| service.command.clone()),
                (!service.args.is_empty()).then(|| service.args.clone()),
                Vec::new(),
            )
        } else {
            let delivery = self.config.secret_delivery.as_ref().ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "service {:?} has secret variables, and this agent cannot deliver them \
                     without writing them into the container's config: set krane's \
                     [docker] init_binary and secrets_dir",
                    service.name
                ))
            })?;
            let argv = self.command_line(service).await?;
            let dir = delivery.write(&name, &secret_values)?;
            drop(secret_values);
            let bind = |source: &std::path::Path, target: &str| Mount {
                target: Some(target.into()),
                source: Some(source.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            };
            (
                Some(vec![super::secrets::INIT_PATH.to_owned()]),
                Some(argv),
                vec![
                    bind(&delivery.init_source(), super::secrets::INIT_PATH),
                    bind(&dir, super::secrets::SECRETS_MOUNT),
                ],
            )
        };

        let mut exposed = Vec::new();
        let mut bindings = HashMap::new();
        for port in &service.ports {
            let key = format!("{}/{}", port.container, port.protocol.as_str());
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some(self.config.bind_address.to_string()),
                    host_port: Some(port.host.map(|p| p.to_string()).unwrap_or_default()),
                }]),
            );
        }

        for volume in service.volumes.iter().filter(|v| {
            v.persistence == Persistence::Persistent && spec.kind == WorkloadKind::Stateful
        }) {
            let name = labels::volume_name(&spec.id, &service.name, &volume.name, replica);
            self.ensure_volume(&spec.id, &name).await?;
        }
        let mut mounts = secret_mounts;
        let mut anonymous = Vec::new();
        for volume in &service.volumes {
            match (volume.persistence, spec.kind) {
                (Persistence::Persistent, WorkloadKind::Stateful) => mounts.push(Mount {
                    target: Some(volume.mount_path.clone()),
                    source: Some(labels::volume_name(
                        &spec.id,
                        &service.name,
                        &volume.name,
                        replica,
                    )),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }),
                _ => anonymous.push(volume.mount_path.clone()),
            }
        }

        let restart = match (service.role, service.restart) {
            (Role::Init, _) | (_, RestartPolicy::Never) => (RestartPolicyNameEnum::NO, None),
            (_, RestartPolicy::Always) => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
            (_, RestartPolicy::OnFailure { max_retries }) => (
                RestartPolicyNameEnum::ON_FAILURE,
                Some(i64::from(max_retries)),
            ),
        };
        let limits = &service.resources;
        let memory = (limits.memory_mib > 0).then(|| i64::from(limits.memory_mib) * 1024 * 1024);
        let host_config = HostConfig {
            port_bindings: Some(bindings),
            nano_cpus: (limits.cpu_millis > 0).then(|| i64::from(limits.cpu_millis) * 1_000_000),
            memory,
            // No swap beyond the memory limit: the limit means what it says.
            memory_swap: memory,
            pids_limit: (limits.pids > 0).then(|| i64::from(limits.pids)),
            restart_policy: Some(DockerRestart {
                name: Some(restart.0),
                maximum_retry_count: restart.1,
            }),
            init: Some(self.config.init_process),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        };
        let network = labels::network_name(&spec.id);
        let endpoint = EndpointSettings {
            aliases: Some(vec![
                service.name.clone(),
                format!("{}-{replica}", service.name),
            ]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(service.image.clone()),
            entrypoint,
            cmd,
            env: Some(env),
            labels: Some(
                labels::container_labels(spec, &self.owner(), index, replica, revision, releases)
                    .into_iter()
                    .collect(),
            ),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            volumes: (!anonymous.is_empty()).then_some(anonymous),
            stop_signal: Some(service.stop_signal.as_str().into()),
            stop_timeout: Some(i64::try_from(service.stop_grace.as_secs()).unwrap_or(i64::MAX)),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network, endpoint)])),
            }),
            ..Default::default()
        };
        let created = self
            .call(
                &format!("create container {name}"),
                self.docker.create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    body,
                ),
            )
            .await;
        let created = match created {
            Ok(created) => created,
            Err(e) => {
                if let Some(delivery) = &self.config.secret_delivery {
                    delivery.remove(&name);
                }
                return Err(e);
            }
        };
        if !service.config_files.is_empty() {
            let archive = config_archive(service)?;
            let upload = self.docker.upload_to_container(
                &created.id,
                Some(UploadToContainerOptions {
                    path: "/".into(),
                    ..Default::default()
                }),
                bollard::body_full(archive.into()),
            );
            if let Err(e) = self
                .call(&format!("write config files into {name}"), upload)
                .await
            {
                // Leave nothing half-made behind.
                self.remove_container(&created.id, &name).await.ok();
                return Err(e);
            }
        }
        Ok(created.id)
    }
}

/// A tar archive with every config file of `service` (and its directories).
fn config_archive(service: &crate::ServiceSpec) -> Result<Vec<u8>, Error> {
    let fail =
        |e: std::io::Error| Error::backend(format!("pack config files of {}", service.name), e);
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for file in &service.config_files {
        let relative = file.path.trim_start_matches('/');
        let mut parent = std::path::Path::new(relative).parent();
        let mut chain = Vec::new();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            chain.push(dir.to_path_buf());
            parent = dir.parent();
        }
        for dir in chain.into_iter().rev() {
            if dirs.insert(dir.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &dir, std::io::empty())
                    .map_err(fail)?;
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(file.content.len() as u64);
        header.set_mode(file.mode);
        tar.append_data(&mut header, relative, file.content.as_bytes())
            .map_err(fail)?;
    }
    tar.into_inner().map_err(fail)
}
