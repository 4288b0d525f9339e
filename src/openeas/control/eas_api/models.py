"""EAS's management API request and response shapes (API version 2021-07-01) as pydantic models.

Field names are EAS's, as the official `alibabacloud-eas20210701` SDK reads and writes them
(its `models.py`: `to_map` / `from_map`). The OpenAPI document (`openapi.py`) is generated from
these classes, and every response the EAS layer sends is built from one, so the document and
the wire cannot drift apart.

Query models: the SDK sends every query value as a string; pydantic reads numbers and booleans
from them. Parameters EAS has and openeas has no use for (workspaces, quotas, resource groups)
are accepted and ignored, so a script written for EAS runs unchanged; docs/management-api.md
lists them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PageNo = Annotated[int, Field(ge=1, le=100_000)]
PageLen = Annotated[int, Field(ge=1, le=1000)]


class Model(BaseModel):
    """Unknown fields are refused: a misspelt parameter is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


# -- shared pieces ---------------------------------------------------------------------------


class ErrorBody(Model):
    Code: str
    Message: str
    RequestId: str


class MessageBody(Model):
    """What most write operations answer."""

    Message: str
    RequestId: str


class Paged(Model):
    PageNumber: int
    PageSize: int
    TotalCount: int
    RequestId: str


# -- services --------------------------------------------------------------------------------


class ServiceLabel(Model):
    LabelKey: str
    LabelValue: str


class Service(Model):
    ServiceName: str
    ServiceId: str
    ServiceUid: str
    Region: str
    Status: str
    Message: str = ""
    Reason: str = ""
    AccessToken: str | None = None
    InternetEndpoint: str | None = None
    IntranetEndpoint: str | None = None
    Gateway: str
    ServiceGroup: str | None = None
    TotalInstance: int
    RunningInstance: int
    PendingInstance: int
    CurrentVersion: int | None = None
    LatestVersion: int | None = None
    Cpu: int | None = None
    Memory: int | None = None
    Gpu: int | None = None
    Image: str | None = None
    Resource: str | None = None
    Labels: list[ServiceLabel] = Field(default_factory=list)
    ServiceConfig: str  # the service's JSON spec, as a string (as EAS returns it)
    CreateTime: str
    UpdateTime: str


class DescribeServiceResponse(Service):
    RequestId: str


class CreateServiceQuery(Model):
    Develop: str | None = None  # EAS's "development mode": not in openeas, ignored
    Labels: str | None = None  # JSON object {key: value}, merged into the spec's `labels`
    WorkspaceId: str | None = None  # no workspaces in openeas: ignored


class CreateServiceResponse(Model):
    ServiceName: str
    ServiceId: str
    Region: str
    Status: str
    InternetEndpoint: str | None = None
    IntranetEndpoint: str | None = None
    RequestId: str


class UpdateServiceQuery(Model):
    UpdateType: Literal["merge", "replace"] = "merge"


class ListServicesQuery(Model):
    Filter: str | None = None  # a substring of the service name
    Gateway: str | None = None
    GroupName: str | None = None
    Label: str | None = None  # JSON object {key: value}: services carrying all these labels
    Order: Literal["asc", "desc", "ASC", "DESC"] = "asc"
    Sort: Literal["CreateTime", "ServiceName", "UpdateTime", "Status"] = "CreateTime"
    PageNumber: PageNo = 1
    PageSize: PageLen = 100
    ServiceName: str | None = None
    ServiceStatus: str | None = None
    ServiceType: str | None = None  # metadata.type
    ResourceName: str | None = None  # metadata.resource
    ParentServiceUid: str | None = None  # ignored
    QuotaId: str | None = None  # ignored
    ResourceType: str | None = None  # ignored
    Role: str | None = None  # ignored
    ServiceUid: str | None = None  # the ServiceUid openeas reports (the name)
    WorkspaceId: str | None = None  # ignored


class ListServicesResponse(Paged):
    Services: list[Service]


class UpdateServiceVersionBody(Model):
    Version: Annotated[int, Field(ge=1)]


class UpdateServiceInstanceBody(Model):
    Isolate: bool | None = None
    Detach: bool | None = None


class EndpointEntry(Model):
    EndpointType: str  # DefaultGateway (the shared gateway) | PrivateGateway (a dedicated one)
    BackendId: str  # the gateway id
    InternetEndpoints: list[str]
    IntranetEndpoints: list[str]
    PathType: str = "Path"
    Port: int


class DescribeServiceEndpointsResponse(Model):
    AccessToken: str
    Endpoints: list[EndpointEntry]
    Message: str = ""
    RequestId: str


class ListServiceInstancesQuery(Model):
    Filter: str | None = None  # a substring of the instance name
    InstanceName: str | None = None
    InstanceStatus: str | None = None
    PageNumber: PageNo = 1
    PageSize: PageLen = 100
    HostIP: str | None = None
    InstanceIP: str | None = None
    InstanceType: str | None = None  # ignored
    IsSpot: bool | None = None  # ignored
    Order: str | None = None  # ignored
    ResourceType: str | None = None  # ignored
    Role: str | None = None  # ignored
    Sort: str | None = None  # ignored


class Instance(Model):
    InstanceName: str
    Status: str  # Running | Pending | Failed | Terminating
    HostIP: str
    InnerIP: str
    InstancePort: int
    RestartCount: int
    ReadyProcesses: int
    TotalProcesses: int
    Reason: str = ""
    Isolated: bool = False
    StartAt: str
    StartTime: str


class ListServiceInstancesResponse(Paged):
    Instances: list[Instance]


class DescribeServiceLogQuery(Model):
    InstanceName: str | None = None
    Keyword: str | None = None
    PageNum: PageNo = 1
    PageSize: PageLen = 500  # lines per page, newest page first
    ContainerName: str | None = None  # one container per instance in openeas: ignored
    Ip: str | None = None  # ignored
    Previous: bool | None = None  # ignored (openeas keeps one log per instance)
    StartTime: str | None = None  # ignored
    EndTime: str | None = None  # ignored


class DescribeServiceLogResponse(Model):
    Logs: list[str]
    PageNum: int
    TotalCount: int
    TotalPageNum: int
    RequestId: str


class ListServiceVersionsQuery(Model):
    PageNumber: PageNo = 1
    PageSize: PageLen = 100


class ServiceVersion(Model):
    ImageId: int  # the version number (what UpdateServiceVersion takes)
    BuildTime: str
    Message: str
    ServiceConfig: str
    ImageAvailable: str = "true"
    ServiceRunnable: str = "true"


class ListServiceVersionsResponse(Paged):
    Versions: list[ServiceVersion]


# -- autoscaler and mirror -------------------------------------------------------------------


class ScaleStrategy(Model):
    metricName: str
    threshold: float
    service: str | None = None  # EAS: another service's metric; openeas follows its own


class AutoScalerBody(Model):
    min: Annotated[int, Field(ge=0, le=1000)]
    max: Annotated[int, Field(ge=1, le=1000)]
    scaleStrategies: Annotated[list[ScaleStrategy], Field(min_length=1)]
    behavior: dict[str, Any] | None = None  # {scaleUp, scaleDown, onZero}, as in the service spec


class CurrentMetric(Model):
    metricName: str
    service: str
    value: float


class DescribeServiceAutoScalerResponse(Model):
    ServiceName: str
    MinReplica: int | None = None
    MaxReplica: int | None = None
    ScaleStrategies: list[ScaleStrategy] = Field(default_factory=list)
    Behavior: dict[str, Any] = Field(default_factory=dict)
    CurrentMetrics: list[CurrentMetric] = Field(default_factory=list)
    RequestId: str


class MirrorBody(Model):
    Ratio: Annotated[int, Field(ge=0, le=100)]
    Target: Annotated[list[str], Field(min_length=1, max_length=5)]


class DescribeServiceMirrorResponse(Model):
    ServiceName: str
    Ratio: str  # EAS returns both as strings
    Target: str  # comma-separated service names
    RequestId: str


# -- groups ----------------------------------------------------------------------------------


class Group(Model):
    Name: str
    ClusterId: str
    AccessToken: str
    InternetEndpoint: str | None = None
    IntranetEndpoint: str | None = None
    TrafficMode: str
    QueueService: str = ""
    CreateTime: str
    UpdateTime: str


class DescribeGroupResponse(Group):
    RequestId: str


class ListGroupsQuery(Model):
    Filter: str | None = None
    PageNumber: PageNo = 1
    PageSize: PageLen = 100
    WorkspaceId: str | None = None  # ignored


class ListGroupsResponse(Paged):
    Groups: list[Group]


# -- gateways --------------------------------------------------------------------------------


class CreateGatewayQuery(Model):
    ResourceName: str | None = None  # EAS's resource group: ignored


class CreateGatewayBody(Model):
    Name: str | None = None  # a display name; the gateway's id is generated
    InstanceType: str | None = None  # EAS node size (ecs.c6.large ...): not used by openeas
    Replicas: Annotated[int, Field(ge=1, le=16)] = 1
    EnableInternet: bool = False  # EAS's defaults
    EnableIntranet: bool = True
    ChargeType: str | None = None  # ignored
    AutoRenewal: bool | None = None  # ignored


class GatewayIdResponse(Model):
    GatewayId: str
    Message: str = ""
    RequestId: str


class CreateGatewayResponse(GatewayIdResponse):
    ClusterId: str


class Gateway(Model):
    GatewayId: str
    GatewayName: str
    InstanceType: str = ""
    Replicas: int
    InternetEnabled: bool
    IntranetEnabled: bool
    InternetDomain: str = ""
    IntranetDomain: str = ""
    SSLRedirectionEnabled: bool = False
    IsDefault: bool = False
    Status: str
    CreateTime: str
    UpdateTime: str


class DescribeGatewayResponse(Gateway):
    InternetStatus: str  # Running | Stopped: whether the Internet listener is on
    ExternalClusterId: str = ""
    RequestId: str


class ListGatewayQuery(Model):
    GatewayId: str | None = None
    GatewayName: str | None = None
    PageNumber: PageNo = 1
    PageSize: PageLen = 100
    ResourceName: str | None = None  # ignored


class ListGatewayResponse(Paged):
    Gateways: list[Gateway]


class UpdateGatewayBody(Model):
    Name: str | None = None
    InstanceType: str | None = None
    Replicas: Annotated[int, Field(ge=1, le=16)] | None = None
    EnableInternet: bool | None = None
    EnableIntranet: bool | None = None
    EnableSSLRedirection: bool | None = None
    IsDefault: bool | None = None  # ignored: services name their gateway


class AclPolicy(Model):
    Entry: str
    Comment: str = ""


class AclPolicyQuery(Model):
    """CreateAclPolicy / DeleteAclPolicy: `AclPolicyList` is a JSON list of {Entry, Comment}."""

    AclPolicyList: str
    VpcId: str | None = None  # given: the intranet allow-list; absent: the Internet one


class ListAclPolicyQuery(Model):
    VpcId: str | None = None


class InternetAclPolicies(Model):
    AclPolicyList: list[AclPolicy]


class IntranetAclPolicies(Model):
    VpcId: str
    AclPolicyList: list[AclPolicy]


class ListAclPolicyResponse(Model):
    GatewayId: str
    InternetAclPolicyList: list[InternetAclPolicies]
    IntranetVpcAclPolicyList: list[IntranetAclPolicies]
    RequestId: str
